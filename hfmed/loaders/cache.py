"""Decoded pixels of a split on local disk: what ``streaming=False`` reads from.

Decoding PNG is nearly all of the streaming loader's cost at 224 px, and a training run decodes
every image once per epoch (100 epochs in the MedMNIST protocol). With ``streaming=False`` a split
is decoded once into a flat file of raw uint8 rows (as large as the pixels, like the arrays of the
official ``.npz`` uncompressed), and every epoch reads its rows back with ``preadv``: no decoding,
memory bounded all the same (the OS page cache holds the hot file, not the process), any row one
system call away, one file shared by every worker and rank.

A cache folder is named by a hash of what it was decoded from (each file's real path, size and
modification time, the column and the stored shape), so a rebuilt config gets a fresh cache
instead of stale pixels. It is written to a temporary name under a file lock and renamed into
place, so concurrent ranks decode it once and nobody ever reads half of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from hfmed.errors import UserError
from hfmed.loaders import decode
from hfmed.loaders.built import SplitSource, TaskInfo

if TYPE_CHECKING:
    import pyarrow as pa

PIXELS = "pixels.u8"
META = "meta.json"
DECODE_ROWS = 256  # rows per decoding job while preparing
_IOV_MAX = 1024  # buffers per preadv call (Linux's limit)


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from hfmed.sources.download import cache_dir as hfmed_cache

    return hfmed_cache() / "decoded"


def row_shape(info: TaskInfo) -> tuple[int, ...]:
    return (*info.image_shape, 3) if info.channels == 3 else tuple(info.image_shape)


def cache_key(source: SplitSource, info: TaskInfo) -> str:
    files = []
    for f in source.files:
        st = os.stat(f)
        files.append([os.path.realpath(f), st.st_size, st.st_mtime_ns])
    text = json.dumps(
        {"files": files, "column": info.image_column, "shape": row_shape(info), "version": 1}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _labels_name(column: str) -> str:
    return "labels-" + hashlib.sha256(column.encode()).hexdigest()[:12] + ".npy"


@dataclass
class PixelCache:
    """Raw uint8 rows of one split, ``num_rows`` rows of ``shape`` each, in the split's order."""

    folder: Path
    shape: tuple[int, ...]
    num_rows: int

    def __post_init__(self) -> None:
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "shape": self.shape, "num_rows": self.num_rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def row_nbytes(self) -> int:
        return int(np.prod(self.shape))

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own descriptor
            self._fd = os.open(self.folder / PIXELS, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def labels(self, column: str) -> np.ndarray:
        return np.load(self.folder / _labels_name(column))

    def read(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (split row ids, any order) into ``out`` (len(rows), *shape), in that order."""
        fd = self._file()
        flat = out.reshape(len(rows), self.row_nbytes)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        cuts = np.flatnonzero(np.diff(ordered) != 1) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)]):
            slots = order[a:b]
            offset = int(ordered[a]) * self.row_nbytes
            if slots[-1] - slots[0] == b - a - 1 and (b - a == 1 or bool(np.all(np.diff(slots) == 1))):
                buffers = [memoryview(flat[slots[0] : slots[0] + (b - a)]).cast("B")]
            else:
                buffers = [memoryview(flat[s]) for s in slots.tolist()]
            for i in range(0, len(buffers), _IOV_MAX):
                part = buffers[i : i + _IOV_MAX]
                want = sum(m.nbytes for m in part)
                got = os.preadv(fd, part, offset)
                if got != want:
                    raise UserError(
                        f"{self.folder / PIXELS} is shorter than its rows; delete {self.folder} and run again"
                    )
                offset += want
        return out


def _complete(folder: Path, rows: int, shape: tuple[int, ...]) -> bool:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("num_rows") == rows and tuple(meta.get("shape", ())) == shape and (folder / PIXELS).is_file()


def _unit_table(source: SplitSource, index: int, column: str) -> pa.ChunkedArray:
    """One column of one row group, the file closed after; a file that is gone or damaged is named."""
    unit = source.units[index]
    try:
        with source.location.opened(source.files[unit.file]) as pf:
            return pf.read_row_group(unit.group, columns=[column]).column(column)
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"{source.where(index)}: cannot be read ({reason}); rebuild this config with `hfmed build --overwrite`"
        ) from None


def _unit_images(source: SplitSource, index: int, info: TaskInfo) -> list[memoryview]:
    return decode.blob_views(decode.binary_column(_unit_table(source, index, info.image_column)))


def _write_pixels(source: SplitSource, info: TaskInfo, folder: Path, threads: int, progress: bool) -> None:
    shape = row_shape(info)
    tmp = folder / f".{PIXELS}.{os.getpid()}.tmp"

    def job(index: int, start: int, blobs: list) -> np.ndarray:
        try:
            return decode.decode_images(blobs, np.empty((len(blobs), *shape), dtype=np.uint8))
        except decode.BadImage as e:
            where = source.where(index, start + e.index)
            raise UserError(
                f"{where}: the image cannot be decoded ({e.reason}); rebuild this config with `hfmed build --overwrite`"
            ) from None

    try:
        with (
            open(tmp, "wb") as f,
            ThreadPoolExecutor(threads) as pool,
            tqdm(
                total=source.num_rows, desc=f"decoding {source.config}/{source.split}", unit="img", disable=not progress
            ) as bar,
        ):
            for index in range(len(source.units)):
                blobs = _unit_images(source, index, info)
                starts = range(0, len(blobs), DECODE_ROWS)
                for pixels in pool.map(
                    job, [index] * len(starts), starts, [blobs[i : i + DECODE_ROWS] for i in starts]
                ):
                    f.write(memoryview(pixels).cast("B"))
                    bar.update(len(pixels))
        os.replace(tmp, folder / PIXELS)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_labels(source: SplitSource, info: TaskInfo, folder: Path) -> None:
    parts = []
    for index in range(len(source.units)):
        column = _unit_table(source, index, info.label_column)
        try:
            parts.append(decode.label_array(column, info.num_labels, info.multi_label))
        except ValueError as e:
            raise UserError(f"{source.where(index)}: {e}; rebuild this config with `hfmed build --overwrite`") from None
    tmp = folder / f".labels.{os.getpid()}.tmp.npy"
    np.save(tmp, np.concatenate(parts))
    os.replace(tmp, folder / _labels_name(info.label_column))


def prepare(
    source: SplitSource,
    info: TaskInfo,
    *,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 1,
    progress: bool = True,
) -> PixelCache:
    """The decoded cache of ``source`` for ``info``'s columns, decoding it first if needed."""
    if source.location.remote:
        raise ValueError("the decoded cache is built from local files; download the split first")
    shape = row_shape(info)
    folder = cache_root(cache_dir) / cache_key(source, info)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the decoded-pixel cache {folder} ({e.strerror}); pass cache_dir= or set HFMED_CACHE"
        ) from None
    with _locked(folder / ".lock"):
        if not _complete(folder, source.num_rows, shape):
            (folder / META).unlink(missing_ok=True)
            _write_pixels(source, info, folder, threads, progress)
            meta = {
                "num_rows": source.num_rows,
                "shape": list(shape),
                "source": source.describe(),
                "files": list(source.files),
            }
            (folder / META).write_text(json.dumps(meta, indent=1))
        if not (folder / _labels_name(info.label_column)).is_file():
            _write_labels(source, info, folder)
    return PixelCache(folder, shape, source.num_rows)
