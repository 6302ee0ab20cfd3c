"""Generated benchmark inputs that look like medical images to a PNG encoder, and the training
step that the GPU benchmarks time on synthetic tensors.

Pure noise would make every PNG as large as the raw pixels and every encoder equally slow; real
scans are smooth fields with structures and sensor noise. These images are built the same way
(low-frequency field + a few blobs + mild noise), deterministic from a seed, chunk by chunk so a
multi-GB file never sits in memory.
"""

from __future__ import annotations

import struct
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def images(n: int, size: int, channels: int, seed: int = 0, chunk: int = 256) -> Iterator[np.ndarray]:
    """Chunks of (k, size, size[, 3]) uint8 images, n rows in all."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    done = 0
    while done < n:
        k = min(chunk, n - done)
        a, b, c = (rng.uniform(-1, 1, (k, 1, 1)).astype(np.float32) for _ in range(3))
        field = 110 + 60 * (a * xx + b * yy) + 30 * np.sin(6 * c * xx * yy + 3 * a)
        for _ in range(3):
            cx, cy = rng.uniform(0.2, 0.8, (2, k, 1, 1)).astype(np.float32)
            r = rng.uniform(0.03, 0.15, (k, 1, 1)).astype(np.float32)
            field += 70 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        field += rng.normal(0, 4, field.shape).astype(np.float32)
        img = np.clip(field, 0, 255).astype(np.uint8)
        if channels == 3:
            tint = rng.uniform(0.7, 1.0, (k, 1, 1, 3)).astype(np.float32)
            img = np.clip(img[..., None] * tint, 0, 255).astype(np.uint8)
        yield img
        done += k


def _npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    text = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def write_medmnist_like(
    path: Path,
    n_train: int,
    size: int,
    channels: int,
    n_val: int = 0,
    n_test: int = 0,
    n_classes: int = 9,
    seed: int = 0,
) -> Path:
    """A MedMNIST-format .npz (deflated members, 2D member order) written in a streaming way."""
    splits = {"train": n_train, "val": n_val, "test": n_test}
    shape_tail = (size, size, 3) if channels == 3 else (size, size)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for i, (split, n) in enumerate(splits.items()):
            with z.open(f"{split}_images.npy", "w", force_zip64=True) as f:
                f.write(_npy_header((n,) + shape_tail))
                for chunk in images(n, size, channels, seed + i):
                    f.write(chunk.tobytes())
        rng = np.random.default_rng(seed)
        for split, n in splits.items():
            with z.open(f"{split}_labels.npy", "w") as f:
                f.write(_npy_header((n, 1)))
                f.write(rng.integers(0, n_classes, (n, 1), dtype=np.uint8).tobytes())
    return path


def training_step(model, optimizer, device, bf16: bool):
    """``step(pixels, labels)``: one forward, backward and optimizer update, bf16 autocast if asked."""
    import torch

    def step(pixels, labels) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def synchronize(device) -> None:
    """Wait for the accelerator's queued work, so that wall time covers it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_on_one_batch(step, pixels, labels, device, warmup: int, steps: int) -> float:
    """Wall seconds of ``steps`` calls of ``step`` on the same batch, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step(pixels, labels)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(pixels, labels)
    synchronize(device)
    return time.perf_counter() - start
