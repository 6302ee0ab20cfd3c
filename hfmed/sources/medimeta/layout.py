"""The official layout of a MedIMeta dataset folder, and the one rule for reading any file in it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hfmed.errors import UserError

INFO_FILE = "info.yaml"
HDF5_FILE = "images.hdf5"
HDF5_DATASET = "images"
TIFF_DIR = "images"
LABELS_DIR = "task_labels"
ANNOTATIONS_FILE = "annotations.csv"
SPLIT_KINDS = ("splits", "original_splits")
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}  # our split name -> file stem / info key
RESERVED_COLUMNS = ("image", "patient_id")


def fail(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what}")


def regular_file(path: Path, root: Path) -> Path:
    """``path`` itself, after checking it is a regular file whose real location is inside ``root``.

    A symlink that stays inside the dataset folder is fine; one that leads anywhere else would
    copy a file the user never named into the shards (and onto the Hub with ``push``).
    """
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise fail(
            path,
            f"is a link to {real}, outside the dataset folder {root}; only files inside the "
            "folder are read (copy the file in)",
        )
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise fail(path, "missing (a dangling link); download the complete dataset folder") from None
    except OSError as e:
        raise fail(path, f"cannot be read ({e.strerror}); check its permissions") from None
    if not stat.S_ISREG(mode):
        raise fail(path, "is not a regular file (a folder, device, FIFO or socket); restore the original file")
    return path
