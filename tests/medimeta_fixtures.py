"""Synthetic MedIMeta dataset folders in exactly the official layout, generated from an info.yaml.

No real MedIMeta images are available offline, so tests and the benchmark write folders the way
the official pipeline does (see ../shared/data/README.md): ``info.yaml``, ``images.hdf5``
(``images``, uint8, (N,H,W) or (N,H,W,C)), ``images/NNNNNN.tiff``, ``task_labels/<task>.npy``,
``splits/`` and ``original_splits/`` (``images/NNNNNN.tiff`` lines, no trailing newline, no file
for an empty split), ``annotations.csv`` and ``LICENSE``. Label keys, task types and channels come
from the info file; only the counts are made small.

A real info file is copied as text with its counts rewritten, so the YAML the reader sees keeps
every quirk of the original (quoting, unicode, ``112_120``-style numbers where they remain).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml
from PIL import Image

STEMS = ("train", "val", "test")
SMALL = {"train": 3, "val": 2, "test": 2}


def proportional(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights``: zero stays zero, non-zero gets at least 1."""
    live = [i for i, w in enumerate(weights) if w > 0]
    out = [0] * len(weights)
    if not live:
        return out
    for i in live:
        out[i] = 1
    rest = total - len(live)
    if rest > 0:
        s = sum(weights[i] for i in live)
        share = {i: rest * weights[i] / s for i in live}
        for i in live:
            out[i] += int(share[i])
        left = total - sum(out)
        for i in sorted(live, key=lambda i: share[i] - int(share[i]), reverse=True)[:left]:
            out[i] += 1
    return out


def _rewrite_counts(text: str, total: int, splits: dict[str, int], original: dict[str, int]) -> str:
    """The info text with total_num_samples and both split-count blocks replaced."""
    block = None
    lines = []
    for line in text.splitlines(keepends=True):
        top = re.match(r"([A-Za-z_]+):", line)
        if top:
            block = top.group(1)
            if block == "total_num_samples":
                line = re.sub(r":\s*[0-9_]+", f": {total}", line, count=1)
        else:
            m = re.match(r"(\s+)(train|val|test):\s*[0-9_]+(\s*#.*)?\s*$", line)
            if m and block in ("splits_num_samples", "original_splits_num_samples"):
                counts = splits if block == "splits_num_samples" else original
                line = f"{m.group(1)}{m.group(2)}: {counts[m.group(2)]}{m.group(3) or ''}\n"
        lines.append(line)
    return "".join(lines)


def noise_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, (n,) + shape, dtype=np.uint8)


def _split_lines(indices: np.ndarray) -> str:
    return "\n".join(f"images/{i:06d}.tiff" for i in indices)


def make_medimeta_folder(
    root: str | Path,
    info: str | Path | dict,
    sizes: dict[str, int] | None = None,
    *,
    seed: int = 0,
    hdf5: bool = True,
    tiff: bool = True,
    hdf5_channel_axis: bool = False,
    patient_id: bool = True,
    shuffled: bool = True,
    images: Callable[
        [np.random.Generator, int, tuple[int, ...]], np.ndarray
    ] = noise_images,  # (rng, k, shape) -> k images
    chunk: int = 512,
) -> Path:
    """Write ``<root>/<id>/`` in the official layout; returns the dataset folder.

    ``info`` is a real info file (copied with its counts rewritten) or a dict (dumped as YAML).
    ``sizes`` gives images per standard split (train/val/test); original splits keep the real
    file's pattern: identical to the standard ones where the real counts are, otherwise the same
    images redistributed in the real proportions (empty where the real split is empty).
    ``shuffled`` writes split files in random order, as the reader must keep any order.
    ``hdf5_channel_axis`` stores grayscale as (N,H,W,1), as older releases did.
    """
    if isinstance(info, dict):
        raw, text = info, None
    else:
        text = Path(info).read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    rng = np.random.default_rng(seed)
    sizes = dict(sizes or SMALL)
    real_std = raw["splits_num_samples"]
    std = {s: (sizes.get(s, 0) if real_std.get(s, 0) else 0) for s in STEMS}
    n = sum(std.values())
    real_orig = raw.get("original_splits_num_samples") or real_std
    same = all(real_orig.get(s, 0) == real_std.get(s, 0) for s in STEMS)
    orig = dict(std) if same else dict(zip(STEMS, proportional(n, [real_orig.get(s, 0) for s in STEMS])))

    folder = Path(root) / raw["id"]
    folder.mkdir(parents=True)
    if text is not None:
        (folder / "info.yaml").write_text(_rewrite_counts(text, n, std, orig), encoding="utf-8")
    else:
        raw = {**raw, "total_num_samples": n, "splits_num_samples": std, "original_splits_num_samples": orig}
        (folder / "info.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")

    # splits: a random partition of the images; original splits a different one unless identical
    def partition(counts: dict[str, int]) -> dict[str, np.ndarray]:
        perm = rng.permutation(n)
        out, a = {}, 0
        for s in STEMS:
            part = perm[a : a + counts[s]]
            out[s] = part if shuffled else np.sort(part)
            a += counts[s]
        return out

    std_idx = partition(std)
    orig_idx = std_idx if same else partition(orig)
    for kind, parts in (("splits", std_idx), ("original_splits", orig_idx)):
        (folder / kind).mkdir()
        for s, idx in parts.items():
            if len(idx):
                (folder / kind / f"{s}.txt").write_text(_split_lines(idx), encoding="ascii")

    # labels, one file per task, named by the task name as written
    (folder / "task_labels").mkdir()
    labels: dict[str, np.ndarray] = {}
    for task in raw["tasks"]:
        keys = sorted(task["labels"])
        if task["task_target"] == "MULTILABEL_CLASSIFICATION":
            arr = rng.integers(0, 2, (n, len(keys)), dtype=np.int64)
        else:
            arr = np.asarray(keys, dtype=np.int64)[rng.integers(0, len(keys), n)]
        labels[task["task_name"]] = arr
        np.save(folder / "task_labels" / f"{task['task_name']}.npy", arr)

    # images: the same pixels in images.hdf5 and images/*.tiff
    c, h, w = raw["input_size"]
    shape = (h, w) if c == 1 else (h, w, c)
    stored = (h, w, 1) if (c == 1 and hdf5_channel_axis) else shape
    f = h5py.File(folder / "images.hdf5", "w") if hdf5 else None
    ds = f.create_dataset("images", shape=(n,) + stored, dtype=np.uint8) if f is not None else None
    if tiff:
        (folder / "images").mkdir()
    try:
        for a in range(0, n, chunk):
            block = images(rng, min(chunk, n - a), shape)
            if ds is not None:
                ds[a : a + len(block)] = block.reshape((len(block),) + stored)
            if tiff:
                for j, img in enumerate(block):
                    Image.fromarray(img).save(folder / "images" / f"{a + j:06d}.tiff", compression=None)
    finally:
        if f is not None:
            f.close()

    # annotations.csv, columns as the official writer orders them
    split_of = {int(i): s for s, idx in std_idx.items() for i in idx}
    orig_of = {int(i): s for s, idx in orig_idx.items() for i in idx}
    tasks = [t["task_name"] for t in raw["tasks"]]
    header = ["filepath", "split", *[f"tasks/{t}" for t in tasks], "original_filepath", "original_split"]
    header += (["patient_id"] if patient_id else []) + ["label_text"]
    with open(folder / "annotations.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        for i in range(n):
            cells: list[Any] = [f"images/{i:06d}.tiff", split_of[i]]
            cells += [str(labels[t][i].tolist()) for t in tasks]
            cells += [f"original/{i:05d}.png", orig_of[i]]
            cells += ([f"P{i // 2:05d}"] if patient_id else []) + [f"synthetic {i}"]
            out.writerow(cells)
    (folder / "LICENSE").write_text(str(raw.get("license", "")) + "\n", encoding="utf-8")
    return folder
