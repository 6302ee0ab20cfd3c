"""One MedIMeta dataset folder: every file checked against its ``info.yaml``, then read split by split."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hfmed.errors import UserError
from hfmed.sources.medimeta.hdf5 import Hdf5Images
from hfmed.sources.medimeta.info import Task, parse_info
from hfmed.sources.medimeta.layout import (
    ANNOTATIONS_FILE,
    HDF5_FILE,
    INFO_FILE,
    LABELS_DIR,
    SPLIT_FILES,
    TIFF_DIR,
    fail,
    regular_file,
)
from hfmed.sources.medimeta.tiff import TiffImages

WINDOW_BYTES = 32 << 20  # pixels per batch handed to the writer
LABEL_CHUNK_ROWS = 1 << 20  # rows of a labels file checked at a time

_SPLIT_LINE = re.compile(r"images/(\d{6,})\.tiff")


class MedIMetaFolder:
    """One dataset folder: checked as a whole by :meth:`validate`, then read split by split."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(
                f"{self.path}: no such folder; pass --source the folder holding the MedIMeta dataset folders"
            )
        self.info = parse_info(self.path / INFO_FILE, self.path)
        self._patient_column: bool | None = None
        self._patient_ids: np.ndarray | None = None
        self._split_cache: dict[tuple[str, str], np.ndarray] = {}
        self._checked = False

    # -- what the folder holds
    @property
    def has_hdf5(self) -> bool:
        return (self.path / HDF5_FILE).is_file()

    @property
    def has_patient_id(self) -> bool:
        """Whether annotations.csv has a patient_id column (read from its header only)."""
        if self._patient_column is None:
            path = self.path / ANNOTATIONS_FILE
            self._patient_column = False
            if path.is_file():
                with self._open_csv(path) as rows:
                    header = next(rows, [])
                self._patient_column = "patient_id" in header
        return self._patient_column

    @contextmanager
    def _open_csv(self, path: Path) -> Iterator[Iterator[list[str]]]:
        regular_file(path, self.path)
        try:
            with open(path, newline="", encoding="utf-8") as f:
                yield csv.reader(f)
        except (csv.Error, UnicodeDecodeError) as e:
            raise fail(path, f"not a readable CSV file ({e}); restore the original annotations.csv") from None
        except OSError as e:
            raise fail(path, f"cannot be read ({e.strerror})") from None

    @contextmanager
    def images(self) -> Iterator[Hdf5Images | TiffImages]:
        if self.has_hdf5:
            reader: Hdf5Images | TiffImages = Hdf5Images(self.path / HDF5_FILE, self.info, self.path)
        elif (self.path / TIFF_DIR).is_dir():
            reader = TiffImages(self.path / TIFF_DIR, self.info, self.path)
        else:
            raise fail(self.path, f"holds neither {HDF5_FILE} nor {TIFF_DIR}/*.tiff; download the dataset's images")
        try:
            yield reader
        finally:
            reader.close()

    def labels_path(self, task: Task) -> Path:
        return self.path / LABELS_DIR / f"{task.name}.npy"

    def labels(self, task: Task) -> np.ndarray:
        """The labels of a task, memory-mapped: (N,) keys, or (N, K) 0/1 for multi-label."""
        path = self.labels_path(task)
        if not path.is_file():
            raise fail(
                path,
                f"missing: info.yaml declares task {task.name!r} but there is no labels file "
                "for it; download the complete task_labels/ folder",
            )
        regular_file(path, self.path)
        try:  # numpy caps the header at max_header_size (10,000 bytes) and never unpickles here
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError, SyntaxError, RecursionError, MemoryError) as e:
            raise fail(
                path, f"not a plain numeric .npy array ({' '.join(str(e).split())[:160]}); download the labels again"
            ) from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iub":
            raise fail(path, f"holds {getattr(arr, 'dtype', type(arr).__name__)}, expected integer label keys")
        k = len(task.keys)
        if task.multi_label:
            if arr.ndim != 2 or arr.shape[1] != k:
                raise fail(
                    path,
                    f"has shape {arr.shape}; multi-label task {task.name!r} needs (N, {k}) of 0/1, "
                    "one column per label",
                )
        elif arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)
        elif arr.ndim != 1:
            raise fail(path, f"has shape {arr.shape}; task {task.name!r} needs (N,) label keys")
        return arr

    def split_indices(self, kind: str, split: str) -> np.ndarray:
        """Image indices of one split file, in the file's order (absent file: empty split)."""
        key = (kind, split)
        if key in self._split_cache:
            return self._split_cache[key]
        path = self.path / kind / f"{SPLIT_FILES[split]}.txt"
        declared = (self.info.split_sizes(kind) or {}).get(split, 0)
        if not path.is_file():
            if declared:
                raise fail(
                    path,
                    f"missing, but info.yaml declares {declared} images in it; download the complete {kind}/ folder",
                )
            idx = np.zeros(0, dtype=np.int64)
        else:
            idx = self._read_split_file(path)
            if len(idx) != declared:
                raise fail(
                    path,
                    f"lists {len(idx)} images, info.yaml declares {declared}; the folder is "
                    "incomplete or its info.yaml is not its own",
                )
        self._split_cache[key] = idx
        return idx

    def _read_split_file(self, path: Path) -> np.ndarray:
        regular_file(path, self.path)
        try:
            text = path.read_text(encoding="ascii")
        except UnicodeDecodeError:
            raise fail(
                path, "not a split file (it holds non-ASCII bytes); lines must read images/NNNNNN.tiff"
            ) from None
        lines = text.splitlines()
        if lines and lines[-1] == "":
            lines.pop()
        out = np.empty(len(lines), dtype=np.int64)
        n = self.info.total
        for i, line in enumerate(lines):
            m = _SPLIT_LINE.fullmatch(line.strip())
            if m is None:
                raise fail(path, f"line {i + 1} reads {line[:60]!r}; every line must read images/NNNNNN.tiff")
            out[i] = int(m.group(1))
            if out[i] >= n:
                raise fail(path, f"line {i + 1} names image {out[i]}, but the dataset has images 0..{n - 1}")
        if len(np.unique(out)) != len(out):
            s = np.sort(out)
            d = int(s[1:][s[1:] == s[:-1]][0])
            raise fail(path, f"lists images/{d:06d}.tiff more than once")
        return out

    def patient_ids(self) -> np.ndarray | None:
        """patient_id of every image by index (None where the cell is empty), or None."""
        if not self.has_patient_id:
            return None
        if self._patient_ids is None:
            path = self.path / ANNOTATIONS_FILE
            n = self.info.total
            ids = np.empty(n, dtype=object)
            seen = np.zeros(n, dtype=bool)
            with self._open_csv(path) as rows:
                header = next(rows)
                col = header.index("patient_id")
                fcol = header.index("filepath") if "filepath" in header else 0
                for line, row in enumerate(rows, start=2):
                    if not row:
                        continue
                    m = _SPLIT_LINE.fullmatch(row[fcol].strip()) if len(row) > max(col, fcol) else None
                    if m is None:
                        raise fail(
                            path,
                            f"line {line}: expected images/NNNNNN.tiff in column {header[fcol]!r} and a "
                            "patient_id cell; restore the original annotations.csv",
                        )
                    i = int(m.group(1))
                    if i >= n or seen[i]:
                        raise fail(
                            path,
                            f"line {line}: images/{i:06d}.tiff is "
                            f"{'out of range' if i >= n else 'listed twice'}; restore the original "
                            "annotations.csv",
                        )
                    seen[i] = True
                    ids[i] = row[col] if row[col] != "" else None
            if not seen.all():
                raise fail(
                    path,
                    f"has no row for images/{int(np.flatnonzero(~seen)[0]):06d}.tiff; restore the "
                    "original annotations.csv",
                )
            self._patient_ids = ids
        return self._patient_ids

    def original_differs(self) -> bool:
        """Whether ``original_splits/`` holds other images per split than ``splits/`` (False without it)."""
        if not (self.path / "original_splits").is_dir():
            return False
        for split in SPLIT_FILES:
            a, b = self.split_indices("splits", split), self.split_indices("original_splits", split)
            if len(a) != len(b) or not np.array_equal(np.sort(a), np.sort(b)):
                return True
        return False

    def validate(self, kind: str) -> None:
        """Check everything a build of ``kind`` reads, before anything is written."""
        info = self.info
        with self.images() as images:
            if images.count != info.total:
                where = images.path if isinstance(images, Hdf5Images) else images.folder
                raise fail(where, f"holds {images.count} images, info.yaml declares total_num_samples {info.total}")
        for task in info.tasks:
            arr = self.labels(task)
            if arr.shape[0] != info.total:
                raise fail(
                    self.labels_path(task),
                    f"has {arr.shape[0]} labels for {info.total} images; the labels do not belong to these images",
                )
            for a in range(0, arr.shape[0], LABEL_CHUNK_ROWS):
                bad = task.undeclared(arr[a : a + LABEL_CHUNK_ROWS])
                if bad is not None:
                    allowed = "0 or 1" if task.multi_label else ", ".join(map(str, task.keys))
                    raise fail(
                        self.labels_path(task),
                        f"holds label {bad}, which info.yaml does not declare for task {task.name!r} "
                        f"(declared: {allowed})",
                    )
        seen: dict[int, str] = {}
        for split in SPLIT_FILES:
            idx = self.split_indices(kind, split)
            both = np.intersect1d(idx, np.fromiter(seen, dtype=np.int64, count=len(seen)))
            if len(both):
                i = int(both[0])
                raise fail(
                    self.path / kind,
                    f"images/{i:06d}.tiff is in both {SPLIT_FILES[seen[i]]}.txt and "
                    f"{SPLIT_FILES[split]}.txt; splits must not overlap",
                )
            seen.update(dict.fromkeys(idx.tolist(), split))
        self.patient_ids()
        self._checked = True

    def iter_batches(self, indices: np.ndarray, window_bytes: int | None = None) -> Iterator[dict[str, Any]]:
        """Rows ``indices`` in that order, as column batches of about ``window_bytes`` of pixels."""
        rows = max(1, (window_bytes or WINDOW_BYTES) // max(1, int(np.prod(self.info.image_shape))))
        labels = {t.column: self.labels(t) for t in self.info.tasks}
        patients = self.patient_ids()
        with self.images() as images:
            for a in range(0, len(indices), rows):
                idx = np.asarray(indices[a : a + rows], dtype=np.int64)
                batch: dict[str, Any] = {"image": images.read(idx)}
                for task in self.info.tasks:
                    values = np.asarray(labels[task.column][idx])
                    batch[task.column] = values.astype(np.uint8) if task.multi_label else task.ids(values)
                if patients is not None:
                    batch["patient_id"] = patients[idx].tolist()
                yield batch
