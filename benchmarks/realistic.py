"""Realistic benchmark inputs in the official MedMNIST file format, made from real pictures.

- ``breastmnist_224``: the real BreastMNIST file (../shared/data/medmnist/breastmnist.npz), every
  image resized from 28 to 224 px with Pillow's bicubic filter, labels and splits unchanged.
  Upscaled scans are smoother than native 224 px ones, so they deflate better than real
  MedMNIST+ files would; they are real anatomy, not noise.
- ``photos_224``: tiles of the two photographs scikit-learn ships (``load_sample_images``:
  china.jpg and flower.jpg, 427x640 RGB), cut at a grid of offsets (160x160 px) and resized to
  224 px: real colour texture and edges, each tile different.

Both are written as ``<name>.npz`` with ``{train,val,test}_{images,labels}`` members, so the
builders read them as they read the official files (with ``unofficial=True``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "data" / "medmnist"
SPLITS = ("train", "val", "test")


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)) for a in images])


def breastmnist_224(path: Path) -> Path:
    """The real BreastMNIST images at 224 px (780 images, mode L)."""
    src = np.load(REAL / "breastmnist.npz")
    members = {}
    for s in SPLITS:
        members[f"{s}_images"] = _resize(src[f"{s}_images"], 224)
        members[f"{s}_labels"] = src[f"{s}_labels"]
    np.savez_compressed(path, **members)
    return path


def photo_tiles(n: int, size: int = 224, tile: int = 160, seed: int = 0) -> np.ndarray:
    """``n`` RGB tiles of scikit-learn's sample photographs, each resized to ``size``."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        y = int(rng.integers(0, photo.shape[0] - tile))
        x = int(rng.integers(0, photo.shape[1] - tile))
        crop = photo[y : y + tile, x : x + tile]
        if i // len(photos) % 2:
            crop = crop[:, ::-1]  # mirrored tiles double the distinct content
        out[i] = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))
    return out


def photos_224(path: Path, n: int, classes: int = 9, seed: int = 0) -> Path:
    """A pathmnist_224-shaped file of ``n`` photo tiles (80/10/10 split, labels uniform over ``classes``)."""
    rng = np.random.default_rng(seed)
    images = photo_tiles(n, seed=seed)
    cut = [0, int(0.8 * n), int(0.9 * n), n]
    members = {}
    for k, s in enumerate(SPLITS):
        members[f"{s}_images"] = images[cut[k] : cut[k + 1]]
        members[f"{s}_labels"] = rng.integers(0, classes, (cut[k + 1] - cut[k], 1), dtype=np.uint8)
    np.savez_compressed(path, **members)
    return path
