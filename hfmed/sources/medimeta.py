"""Reader for MedIMeta dataset folders, in the official layout of Zenodo record 7884735.

A dataset folder describes itself: ``info.yaml`` names its tasks, label keys and split sizes, and
everything else (``images.hdf5`` or ``images/NNNNNN.tiff``, ``task_labels/<task>.npy``,
``splits/``, ``original_splits/``, ``annotations.csv``) is read and checked against it. No dataset
needs code of its own, so a new folder in the same layout reads without a change here.

The folder is untrusted input: YAML goes through a safe loader without aliases and with bounded
text, ``.npy`` files are opened without pickle, no name found in a file is allowed to make a path
outside the folder, and every file read is a regular file that resolves inside the folder (no
symlink, HDF5 external storage, virtual dataset or external link reaches anything else). Everything is
checked before the first row is handed out, so a build either completes or fails with one line.

Images are read in windows of the split's own order (split files need not be sorted): each window
is fetched as a few contiguous HDF5 slices in index order and then put back in file order, so
memory stays at a few windows of pixels however large the dataset is.
"""

from __future__ import annotations

import csv
import os
import re
import stat
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

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

WINDOW_BYTES = 32 << 20  # pixels per batch handed to the writer
RUN_GAP = 8  # rows a contiguous HDF5 read may skip over rather than start a new read
LABEL_CHUNK_ROWS = 1 << 20  # rows of a labels file checked at a time
MAX_INFO_BYTES = 1 << 20  # the largest official info.yaml is a few KB
MAX_TEXT_CHARS = 20_000  # one text field of info.yaml (a summary, a citation)

_SPLIT_LINE = re.compile(r"images/(\d{6,})\.tiff")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CC_LICENSE = re.compile(r"\((CC [A-Z][A-Z -]*? \d\.\d)\)")


def _task_types() -> dict[str, str]:
    from hfmed import facts

    return facts.load("medimeta")["task_targets"]


# --- info.yaml -------------------------------------------------------------------------------
class _InfoLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 booleans, so a label named ``No`` or ``Yes`` stays text.

    Nothing in the info schema is a boolean, while label names are free text; everything else
    (including ``112_120`` read as an integer) is plain ``safe_load`` behaviour.
    """


class _AliasRefused(yaml.YAMLError):
    pass


def _no_aliases(self, parent, index):
    # An alias repeats a node without repeating its text: a 1 KB file can expand to gigabytes.
    if self.check_event(yaml.AliasEvent):
        raise _AliasRefused("uses YAML aliases (*name)")
    return yaml.composer.Composer.compose_node(self, parent, index)


_InfoLoader.compose_node = _no_aliases
_InfoLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def is_dataset_id(name: str) -> bool:
    """A name safe as a folder name: letters, digits, '_', '-', '.', and never '..'."""
    return bool(_ID.fullmatch(name)) and ".." not in name


def snake_case(name: str) -> str:
    """Column name for a task: ``"DR level"`` -> ``dr_level``, ``"calcType"`` -> ``calc_type``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    if not text:
        return "task"
    return f"task_{text}" if text[0].isdigit() else text


def license_id(text: str) -> str:
    """Hub license id from the license text, e.g. ``... (CC BY-SA 4.0)`` -> ``cc-by-sa-4.0``."""
    m = _CC_LICENSE.search(text or "")
    return m.group(1).lower().replace(" ", "-") if m else "other"


@dataclass(frozen=True)
class Task:
    """One task of a dataset: its labels file, its column, and the key -> class id mapping."""

    name: str  # as written in info.yaml; also the labels file name
    column: str
    type: str  # binary | multi-class | ordinal | multi-label
    keys: tuple[int, ...]  # label keys in ascending order; class id i is keys[i]
    names: tuple[str, ...]  # label names in key order, unique

    @property
    def multi_label(self) -> bool:
        return self.type == "multi-label"

    @property
    def contiguous(self) -> bool:
        return self.keys == tuple(range(len(self.keys)))

    def ids(self, values: np.ndarray) -> np.ndarray:
        """Class ids of label keys (keys already checked against the declared ones)."""
        values = np.asarray(values).astype(np.int64, copy=False)
        if self.contiguous:
            return values
        return np.searchsorted(np.asarray(self.keys, dtype=np.int64), values).astype(np.int64)

    def undeclared(self, values: np.ndarray) -> int | None:
        """The first value that is not a declared key (or not 0/1 for a multi-label task)."""
        values = np.asarray(values)
        if self.multi_label:
            bad = (values != 0) & (values != 1)
        else:
            keys = np.asarray(self.keys, dtype=np.int64)
            pos = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
            bad = keys[pos] != values
        return int(values[bad].flat[0]) if bad.any() else None

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "column": self.column, "type": self.type, "keys": list(self.keys), "names": list(self.names)}


@dataclass(frozen=True)
class Info:
    """What a dataset's ``info.yaml`` declares, checked and normalised."""

    path: Path
    id: str
    name: str
    domain: str
    summary: str
    license: str
    input_size: tuple[int, int, int]  # (channels, height, width)
    total: int
    splits: dict[str, int]  # our split names -> declared sizes
    original_splits: dict[str, int] | None
    tasks: tuple[Task, ...]
    original_data: tuple[dict[str, Any], ...] = field(default=())  # name, url, license, citations
    homepage: str = ""
    doi: str = ""

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        c, h, w = self.input_size
        return (h, w) if c == 1 else (h, w, c)

    def split_sizes(self, kind: str) -> dict[str, int] | None:
        return self.splits if kind == "splits" else self.original_splits


def _fail(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what}")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _BadText(ValueError):
    """A text field that is not plain text of bounded size (reported with the file's path)."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict, set, bytes)):
        raise _BadText(f"holds a {type(value).__name__} where text is expected ({str(value)[:40]}...)")
    text = str(value)
    if len(text) > MAX_TEXT_CHARS:
        raise _BadText(f"holds a text field of {len(text):,} characters (at most {MAX_TEXT_CHARS:,})")
    return " ".join(text.split())


def regular_file(path: Path, root: Path) -> Path:
    """``path`` itself, after checking it is a regular file whose real location is inside ``root``.

    A symlink that stays inside the dataset folder is fine; one that leads anywhere else would
    copy a file the user never named into the shards (and onto the Hub with ``push``).
    """
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise _fail(path, f"is a link to {real}, outside the dataset folder {root}; only files inside the folder are read (copy the file in)")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise _fail(path, "missing (a dangling link); download the complete dataset folder") from None
    except OSError as e:
        raise _fail(path, f"cannot be read ({e.strerror}); check its permissions") from None
    if not stat.S_ISREG(mode):
        raise _fail(path, "is not a regular file (a folder, device, FIFO or socket); restore the original file")
    return path


def _sizes(path: Path, raw: Any, key: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise _fail(path, f"'{key}' must map train/val/test to image counts; this info.yaml is not in the MedIMeta format")
    out = {}
    for split, stem in SPLIT_FILES.items():
        n = raw.get(stem, 0)
        if not _int(n) or n < 0:
            raise _fail(path, f"'{key}.{stem}' is {n!r}, expected a count of images (a whole number >= 0)")
        out[split] = n
    extra = sorted(set(map(str, raw)) - set(SPLIT_FILES.values()))
    if extra:
        raise _fail(path, f"'{key}' names unknown split(s) {', '.join(extra)}; MedIMeta splits are train, val and test")
    return out


def _check_task_name(path: Path, name: Any, index: int) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, f"task {index + 1} has task_name {name!r}; every task needs a name (it names its labels file)")
    if any(c in name for c in "/\\\0") or ".." in name or name != name.strip():
        raise _fail(
            path,
            f"task name {name!r} cannot name a file inside {LABELS_DIR}/ (it holds a path separator, '..', "
            "a NUL or surrounding spaces); rename the task in info.yaml and its labels file to match",
        )
    return name


def _parse_task(path: Path, raw: Any, index: int, types: dict[str, str]) -> tuple[str, str, tuple[int, ...], tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise _fail(path, f"task {index + 1} is not a mapping with task_name, task_target and labels")
    name = _check_task_name(path, raw.get("task_name"), index)
    target = raw.get("task_target")
    if target not in types:
        raise _fail(path, f"task {name!r} has task_target {target!r}; supported: {', '.join(types)}")
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise _fail(path, f"task {name!r} has no 'labels' mapping of label keys to names")
    bad = [k for k in labels if not _int(k)]
    if bad:
        raise _fail(path, f"task {name!r} has label key {bad[0]!r}; label keys must be whole numbers")
    keys = tuple(sorted(labels))
    names = []
    for k in keys:
        text = _text(labels[k])
        if not text:
            raise _fail(path, f"task {name!r}: label {k} has no name")
        names.append(text)
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    # ClassLabel needs unique names; a repeated name keeps its key so nothing is merged
    names = [f"{n} ({k})" if seen[n] > 1 else n for n, k in zip(names, keys)]
    return name, types[target], keys, tuple(names)


def _columns(task_names: list[str]) -> list[str]:
    """Snake-case columns, made unique in task order (``image`` and ``patient_id`` are ours)."""
    taken = set(RESERVED_COLUMNS)
    out = []
    for name in task_names:
        base = snake_case(name)
        col, n = base, 2
        while col in taken:
            col, n = f"{base}_{n}", n + 1
        taken.add(col)
        out.append(col)
    return out


def _original_data(raw: Any) -> tuple[dict[str, Any], ...]:
    """The sources a dataset was made from, with whitespace collapsed (YAML folds long lines)."""
    out = []
    for source in raw if isinstance(raw, list) else []:
        if isinstance(source, dict):
            cites = source.get("citations")
            cites = [_text(c) for c in cites if _text(c)] if isinstance(cites, list) else []
            out.append({"name": _text(source.get("name")), "url": _text(source.get("url")), "license": _text(source.get("license")), "citations": cites})
    return tuple(out)


def parse_info(path: str | Path, root: Path | None = None) -> Info:
    """Read and check one ``info.yaml``; every problem is one :class:`UserError` line."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: missing; a MedIMeta dataset folder holds its info.yaml (download the complete folder)")
    regular_file(path, root or path.parent)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INFO_BYTES + 1)
        if len(data) > MAX_INFO_BYTES:
            raise _fail(path, f"is larger than {MAX_INFO_BYTES >> 20} MiB; a MedIMeta info.yaml is a few KB, restore the original")
        raw = yaml.load(data.decode("utf-8"), Loader=_InfoLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as e:
        raise _fail(path, f"{e}; MedIMeta info files use none, restore the original info.yaml") from None
    except RecursionError:
        raise _fail(path, "nests YAML too deeply; restore the original info.yaml") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise _fail(path, f"malformed YAML{line} ({getattr(e, 'problem', None) or 'syntax error'}); restore the original info.yaml") from None
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text; restore the original info.yaml") from None
    except OSError as e:
        raise _fail(path, f"cannot be read ({e.strerror}); check its permissions") from None
    try:
        return _info_from(path, raw)
    except _BadText as e:
        raise _fail(path, f"{e}; text fields must be plain text, restore the original info.yaml") from None


def _info_from(path: Path, raw: Any) -> Info:
    if not isinstance(raw, dict) or not {"id", "tasks", "input_size"} <= set(map(str, raw)):
        raise _fail(path, "not a MedIMeta info.yaml (it needs id, tasks and input_size); point --source at the MedIMeta dataset folders")
    ds_id = raw["id"]
    if not isinstance(ds_id, str) or not is_dataset_id(ds_id):
        raise _fail(path, f"id {ds_id!r} is not a dataset id (letters, digits, '_', '-', '.')")
    size = raw["input_size"]
    if not (isinstance(size, list) and len(size) == 3 and all(_int(v) and v > 0 for v in size) and size[0] in (1, 3)):
        raise _fail(path, f"input_size {size!r} is not [channels, height, width] with 1 or 3 channels")
    tasks_raw = raw["tasks"]
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise _fail(path, "'tasks' must be a non-empty list of tasks")
    types = _task_types()
    parsed = [_parse_task(path, t, i, types) for i, t in enumerate(tasks_raw)]
    names = [p[0] for p in parsed]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise _fail(path, f"task {dup!r} is declared twice; task names must be unique (each names one labels file)")
    tasks = tuple(Task(n, col, typ, keys, lab) for (n, typ, keys, lab), col in zip(parsed, _columns(names)))
    total = raw.get("total_num_samples")
    if not _int(total) or total < 0:
        raise _fail(path, f"total_num_samples is {total!r}, expected the number of images")
    splits = _sizes(path, raw.get("splits_num_samples"), "splits_num_samples")
    original = raw.get("original_splits_num_samples")
    original = _sizes(path, original, "original_splits_num_samples") if original is not None else None
    return Info(
        path=path,
        id=ds_id,
        name=_text(raw.get("name")) or ds_id,
        domain=_text(raw.get("domain")),
        summary=_text(raw.get("summary")),
        license=_text(raw.get("license")),
        input_size=tuple(size),
        total=total,
        splits=splits,
        original_splits=original,
        tasks=tasks,
        original_data=_original_data(raw.get("original_data")),
        homepage=_text(raw.get("project_website")),
        doi=_text(raw.get("DOI")),
    )


def summarize(info: Info) -> dict[str, Any]:
    """The facts-table entry of a dataset (``hfmed/facts/medimeta.yaml`` holds these for the 19)."""
    return {
        "name": info.name,
        "domain": info.domain,
        "input_size": list(info.input_size),
        "images": info.total,
        "splits": dict(info.splits),
        "original_splits": dict(info.original_splits) if info.original_splits is not None else None,
        "license": info.license,
        "license_id": license_id(info.license),
        "tasks": [{"name": t.name, "column": t.column, "type": t.type, "labels": dict(zip(t.keys, t.names))} for t in info.tasks],
        "original_data": [dict(o) for o in info.original_data],
    }


# --- images ----------------------------------------------------------------------------------
def read_runs(sorted_indices: np.ndarray, max_span: int, gap: int = RUN_GAP) -> list[tuple[int, int, int, int]]:
    """Group ascending indices into contiguous reads: (first position, end position, lo, hi).

    Each read covers rows ``lo..hi-1`` of the file, skips at most ``gap`` unwanted rows between
    two wanted ones, and spans at most ``max_span`` rows, so a window never reads much more than
    it keeps.
    """
    runs = []
    n = len(sorted_indices)
    start = 0
    for i in range(1, n + 1):
        if i == n or sorted_indices[i] - sorted_indices[i - 1] > gap + 1 or sorted_indices[i] - sorted_indices[start] >= max_span:
            runs.append((start, i, int(sorted_indices[start]), int(sorted_indices[i - 1]) + 1))
            start = i
    return runs


class Hdf5Images:
    """The ``images`` array of ``images.hdf5``, read by windows of row indices."""

    def __init__(self, path: Path, info: Info, root: Path):
        import h5py

        self.path = regular_file(path, root)
        self._file = None
        try:
            self._file = h5py.File(path, "r")
        except OSError as e:
            raise _fail(path, f"not a readable HDF5 file ({' '.join(str(e).split())}); download images.hdf5 again") from None
        link = self._file.get(HDF5_DATASET, getlink=True)
        if link is not None and not isinstance(link, h5py.HardLink):
            self.close()
            raise _fail(path, f"'{HDF5_DATASET}' is a {type(link).__name__} to another place; only an array stored in this file is read")
        ds = self._file.get(HDF5_DATASET)
        if not isinstance(ds, h5py.Dataset):
            self.close()
            raise _fail(path, f"has no '{HDF5_DATASET}' array; this is not a MedIMeta images.hdf5")
        if ds.external or ds.is_virtual:
            self.close()
            kind = "external storage (raw data in other files)" if ds.external else "a virtual dataset (data mapped from other files)"
            raise _fail(path, f"'{HDF5_DATASET}' uses {kind}; only pixels stored in images.hdf5 itself are read, download the original file")
        want = info.image_shape
        ok = ds.shape[1:] == want or (info.channels == 1 and ds.shape[1:] == want + (1,))
        if len(ds.shape) < 1 or not ok:
            self.close()
            raise _fail(path, f"'{HDF5_DATASET}' has shape {ds.shape}, info.yaml input_size {list(info.input_size)} means (N, {', '.join(map(str, want))})")
        if ds.dtype != np.uint8:
            self.close()
            raise _fail(path, f"'{HDF5_DATASET}' holds {ds.dtype}, expected uint8 pixels")
        self.ds = ds
        self.count = ds.shape[0]
        self.shape = want

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` in the order given, fetched as contiguous slices in index order."""
        out = np.empty((len(indices),) + self.shape, dtype=np.uint8)
        if not len(indices):
            return out
        order = np.argsort(indices, kind="stable")
        s = indices[order]
        try:
            for a, b, lo, hi in read_runs(s, max_span=max(len(indices), 1)):
                block = self.ds[lo:hi].reshape((hi - lo,) + self.shape)
                out[order[a:b]] = block[s[a:b] - lo]
        except OSError as e:
            raise _fail(self.path, f"cannot be read ({e}); the file is damaged or truncated, download it again") from None
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TiffImages:
    """``images/NNNNNN.tiff``, one file per image, for folders without ``images.hdf5``."""

    def __init__(self, folder: Path, info: Info, root: Path):
        self.folder = folder
        self.shape = info.image_shape
        self.mode = "L" if info.channels == 1 else "RGB"
        if not folder.resolve().is_relative_to(root.resolve()):
            raise _fail(folder, f"is a link to {folder.resolve()}, outside the dataset folder {root}; only files inside the folder are read")
        names = set()
        for e in os.scandir(folder):
            if e.name.endswith(".tiff"):
                if not e.is_file(follow_symlinks=False):  # links and odd files are checked one by one
                    regular_file(folder / e.name, root)
                names.add(e.name)
        missing = next((i for i in range(info.total) if self.name(i) not in names), None)
        if missing is not None:
            raise _fail(folder / self.name(missing), f"missing; info.yaml declares {info.total} images (download the complete images/ folder)")
        self.count = info.total
        if self.count:
            self.read(np.array([0]))  # shape and mode are checked up front on the first image

    @staticmethod
    def name(index: int) -> str:
        return f"{index:06d}.tiff"

    def read(self, indices: np.ndarray) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        out = np.empty((len(indices),) + self.shape, dtype=np.uint8)
        for j, i in enumerate(indices):
            path = self.folder / self.name(int(i))
            try:
                with Image.open(path) as im:
                    if im.mode != self.mode or im.size != (self.shape[1], self.shape[0]):
                        raise _fail(path, f"is a {im.size[0]}x{im.size[1]} {im.mode} image, info.yaml declares {self.shape[1]}x{self.shape[0]} {self.mode}")
                    out[j] = np.asarray(im)
            except Image.DecompressionBombError as e:
                raise _fail(path, f"declares an image far larger than {self.shape[1]}x{self.shape[0]} ({' '.join(str(e).split())[:80]}); restore the original TIFF") from None
            except (OSError, UnidentifiedImageError) as e:
                raise _fail(path, f"not a readable TIFF image ({' '.join(str(e).split())}); download the images again") from None
        return out

    def close(self) -> None:
        pass


# --- the folder ------------------------------------------------------------------------------
class MedIMetaFolder:
    """One dataset folder: checked as a whole by :meth:`check`, then read split by split."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such folder; pass --source the folder holding the MedIMeta dataset folders")
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
            raise _fail(path, f"not a readable CSV file ({e}); restore the original annotations.csv") from None
        except OSError as e:
            raise _fail(path, f"cannot be read ({e.strerror})") from None

    @contextmanager
    def images(self) -> Iterator[Hdf5Images | TiffImages]:
        if self.has_hdf5:
            reader: Hdf5Images | TiffImages = Hdf5Images(self.path / HDF5_FILE, self.info, self.path)
        elif (self.path / TIFF_DIR).is_dir():
            reader = TiffImages(self.path / TIFF_DIR, self.info, self.path)
        else:
            raise _fail(self.path, f"holds neither {HDF5_FILE} nor {TIFF_DIR}/*.tiff; download the dataset's images")
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
            raise _fail(path, f"missing: info.yaml declares task {task.name!r} but there is no labels file for it; download the complete task_labels/ folder")
        regular_file(path, self.path)
        try:  # numpy caps the header at max_header_size (10,000 bytes) and never unpickles here
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError, SyntaxError, RecursionError, MemoryError) as e:
            raise _fail(path, f"not a plain numeric .npy array ({' '.join(str(e).split())[:160]}); download the labels again") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iub":
            raise _fail(path, f"holds {getattr(arr, 'dtype', type(arr).__name__)}, expected integer label keys")
        k = len(task.keys)
        if task.multi_label:
            if arr.ndim != 2 or arr.shape[1] != k:
                raise _fail(path, f"has shape {arr.shape}; multi-label task {task.name!r} needs (N, {k}) of 0/1, one column per label")
        elif arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)
        elif arr.ndim != 1:
            raise _fail(path, f"has shape {arr.shape}; task {task.name!r} needs (N,) label keys")
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
                raise _fail(path, f"missing, but info.yaml declares {declared} images in it; download the complete {kind}/ folder")
            idx = np.zeros(0, dtype=np.int64)
        else:
            idx = self._read_split_file(path)
            if len(idx) != declared:
                raise _fail(path, f"lists {len(idx)} images, info.yaml declares {declared}; the folder is incomplete or its info.yaml is not its own")
        self._split_cache[key] = idx
        return idx

    def _read_split_file(self, path: Path) -> np.ndarray:
        regular_file(path, self.path)
        try:
            text = path.read_text(encoding="ascii")
        except UnicodeDecodeError:
            raise _fail(path, "not a split file (it holds non-ASCII bytes); lines must read images/NNNNNN.tiff") from None
        lines = text.splitlines()
        if lines and lines[-1] == "":
            lines.pop()
        out = np.empty(len(lines), dtype=np.int64)
        n = self.info.total
        for i, line in enumerate(lines):
            m = _SPLIT_LINE.fullmatch(line.strip())
            if m is None:
                raise _fail(path, f"line {i + 1} reads {line[:60]!r}; every line must read images/NNNNNN.tiff")
            out[i] = int(m.group(1))
            if out[i] >= n:
                raise _fail(path, f"line {i + 1} names image {out[i]}, but the dataset has images 0..{n - 1}")
        if len(np.unique(out)) != len(out):
            s = np.sort(out)
            d = int(s[1:][s[1:] == s[:-1]][0])
            raise _fail(path, f"lists images/{d:06d}.tiff more than once")
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
                        raise _fail(path, f"line {line}: expected images/NNNNNN.tiff in column {header[fcol]!r} and a patient_id cell; restore the original annotations.csv")
                    i = int(m.group(1))
                    if i >= n or seen[i]:
                        raise _fail(path, f"line {line}: images/{i:06d}.tiff is {'out of range' if i >= n else 'listed twice'}; restore the original annotations.csv")
                    seen[i] = True
                    ids[i] = row[col] if row[col] != "" else None
            if not seen.all():
                raise _fail(path, f"has no row for images/{int(np.flatnonzero(~seen)[0]):06d}.tiff; restore the original annotations.csv")
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

    def check(self, kind: str) -> None:
        """Check everything a build of ``kind`` reads, before anything is written."""
        info = self.info
        with self.images() as images:
            if images.count != info.total:
                where = images.path if isinstance(images, Hdf5Images) else images.folder
                raise _fail(where, f"holds {images.count} images, info.yaml declares total_num_samples {info.total}")
        for task in info.tasks:
            arr = self.labels(task)
            if arr.shape[0] != info.total:
                raise _fail(self.labels_path(task), f"has {arr.shape[0]} labels for {info.total} images; the labels do not belong to these images")
            for a in range(0, arr.shape[0], LABEL_CHUNK_ROWS):
                bad = task.undeclared(arr[a : a + LABEL_CHUNK_ROWS])
                if bad is not None:
                    allowed = "0 or 1" if task.multi_label else ", ".join(map(str, task.keys))
                    raise _fail(self.labels_path(task), f"holds label {bad}, which info.yaml does not declare for task {task.name!r} (declared: {allowed})")
        seen: dict[int, str] = {}
        for split in SPLIT_FILES:
            idx = self.split_indices(kind, split)
            both = np.intersect1d(idx, np.fromiter(seen, dtype=np.int64, count=len(seen)))
            if len(both):
                i = int(both[0])
                raise _fail(self.path / kind, f"images/{i:06d}.tiff is in both {SPLIT_FILES[seen[i]]}.txt and {SPLIT_FILES[split]}.txt; splits must not overlap")
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
