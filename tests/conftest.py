"""Shared fixtures: small files in the exact official formats, and the real files in ../shared."""

from __future__ import annotations

import gc
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REAL_MEDMNIST = SHARED / "data" / "medmnist"
MEDIMETA_INFO = SHARED / "data" / "medimeta_info"


def first_row(rows):
    """The first row of a streamed split, its reader closed and freed at once.

    A `datasets` streaming iterator left open keeps an Arrow reader whose I/O thread can abort
    the interpreter at exit (exit 134, arrow#45214): a flaky CI, after every test has passed.
    """
    it = iter(rows)
    try:
        return next(it)
    finally:
        it.close()
        del it
        gc.collect()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_npz(path: Path, members: dict[str, np.ndarray], order: list[str] | None = None) -> Path:
    """An archive like ``numpy.savez_compressed`` writes (deflated ``<key>.npy`` members), in a chosen member order."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for key in order or list(members):
            z.writestr(key + ".npy", _npy_bytes(members[key]))
    return path


def medmnist_arrays(flag: str, size: int = 28, n: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Members of a MedMNIST file with the official shapes and dtypes for ``flag``, random content.

    ``n`` gives rows per split (train/val/test); by default the official split sizes.
    """
    from hfmed import facts

    f = facts.load("medmnist")["subsets"][flag]
    rng = np.random.default_rng(seed)
    sizes = n or {"train": f["splits"]["train"], "val": f["splits"]["validation"], "test": f["splits"]["test"]}
    k = len(f["labels"])
    out = {}
    for split, rows in sizes.items():
        if f["volumetric"]:
            shape = (rows, size, size, size)
        elif f["channels"] == 3:
            shape = (rows, size, size, 3)
        else:
            shape = (rows, size, size)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if f["task"] == "multi-label":
            out[f"{split}_labels"] = rng.integers(0, 2, (rows, k), dtype=np.uint8)
        else:
            out[f"{split}_labels"] = rng.integers(0, k, (rows, 1), dtype=np.uint8)
    return out


def make_medmnist_npz(folder: Path, flag: str, size: int = 28, n: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A MedMNIST-format file named as the official one; member order as the official 2D/3D files have it."""
    from hfmed import facts

    arrays = medmnist_arrays(flag, size, n, seed)
    volumetric = facts.load("medmnist")["subsets"][flag]["volumetric"]
    splits = ["train", "val", "test"]
    if volumetric:  # 3D files interleave images and labels
        order = [f"{s}_{kind}" for s in splits for kind in ("images", "labels")]
    else:  # 2D files hold all images, then all labels
        order = [f"{s}_images" for s in splits] + [f"{s}_labels" for s in splits]
    name = flag if size == 28 else f"{flag}_{size}"
    return write_npz(Path(folder) / f"{name}.npz", arrays, order)


SMALL = {"train": 12, "val": 5, "test": 6}


@pytest.fixture
def small_npz(tmp_path):
    """Factory: a small generated MedMNIST file (build it with ``unofficial=True``)."""

    def make(flag: str, size: int = 28, n: dict[str, int] | None = None, seed: int = 0) -> Path:
        folder = tmp_path / "sources"
        folder.mkdir(exist_ok=True)
        return make_medmnist_npz(folder, flag, size, n or SMALL, seed)

    return make


def _real(name: str) -> Path:
    path = REAL_MEDMNIST / name
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared/data beside the checkout")
    return path


@pytest.fixture(scope="session")
def real_breastmnist() -> Path:
    return _real("breastmnist.npz")


@pytest.fixture(scope="session")
def real_adrenalmnist3d() -> Path:
    return _real("adrenalmnist3d.npz")


@pytest.fixture(scope="session")
def built_medmnist(tmp_path_factory, real_breastmnist, real_adrenalmnist3d) -> Path:
    """A ``medmnist`` folder holding the real breastmnist and adrenalmnist3d builds (built once per run)."""
    from hfmed.loading_scripts.medmnist import MedMNIST

    from hfmed.writer import build_config

    out = tmp_path_factory.mktemp("build") / "medmnist"
    build_config(MedMNIST("breastmnist", real_breastmnist), out, progress=False)
    build_config(MedMNIST("adrenalmnist3d", real_adrenalmnist3d), out, progress=False)
    return out


def torchrun_train(args: list, env: dict) -> subprocess.CompletedProcess:
    """train_hf.py under torchrun with two processes on this machine (gloo on the CPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = Path(__file__).resolve().parent.parent / "train_hf.py"
    return subprocess.run([*command, str(script), *args], env=env, capture_output=True, text=True, timeout=240)
