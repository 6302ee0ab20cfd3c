"""Streaming reader for ``.npz`` archives.

``numpy.load`` inflates a whole member at once (``mmap_mode`` is ignored for ``.npz``), and it may
unpickle object arrays. A 224 px MedMNIST file holds members of tens of GB, so rows are inflated
chunk by chunk straight from the zip stream, and the ``.npy`` header is parsed here with
``ast.literal_eval`` so that nothing in the file can ever run code.
"""

from __future__ import annotations

import ast
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from hfmed.errors import UserError

_MAGIC = b"\x93NUMPY"
CHUNK_BYTES = 64 << 20  # inflated bytes per chunk: bounded memory, still large reads


@dataclass(frozen=True)
class Member:
    """What the ``.npy`` header of one archive member declares."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int  # bytes of header before the array data

    @property
    def row_nbytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


class NpzArchive:
    """An ``.npz`` file whose members are read as headers first and rows later, never whole."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: no such file; check the path given to --source")
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a folder, not an .npz file; pass the .npz file itself")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile:
            with open(self.path, "rb") as f:
                head = f.read(4)
            if head == b"PK\x03\x04":
                raise UserError(
                    f"{self.path}: the zip archive is truncated or damaged (its directory is missing); "
                    "download the file again"
                ) from None
            raise UserError(f"{self.path}: not an .npz archive (not a zip file); pass an official MedMNIST .npz file") from None
        except OSError as e:
            raise UserError(f"{self.path}: cannot be read ({e.strerror}); check its permissions") from None
        self.members: dict[str, Member] = {}
        for info in self._zip.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            self.members[name] = self._read_header(info)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_header(self, info: zipfile.ZipInfo) -> Member:
        name = info.filename[: -len(".npy")]
        try:
            with self._zip.open(info) as f:
                magic = f.read(8)
                if len(magic) < 8 or magic[:6] != _MAGIC:
                    raise UserError(f"{self.path}: member {name!r} is not a .npy array; the archive is not a MedMNIST file")
                major = magic[6]
                if major == 1:
                    (hlen,) = struct.unpack("<H", f.read(2))
                    offset = 10 + hlen
                elif major in (2, 3):
                    (hlen,) = struct.unpack("<I", f.read(4))
                    offset = 12 + hlen
                else:
                    raise UserError(f"{self.path}: member {name!r} has unknown .npy version {major}; re-save it with numpy.savez_compressed")
                text = f.read(hlen).decode("utf-8" if major == 3 else "latin1")
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise UserError(f"{self.path}: member {name!r} is damaged ({e}); download the file again") from None
        try:
            header = ast.literal_eval(text)
            descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
            dtype = np.dtype(descr) if isinstance(descr, str) else None
        except (ValueError, SyntaxError, KeyError, TypeError):
            raise UserError(f"{self.path}: member {name!r} has an unreadable .npy header; the file is damaged") from None
        if dtype is None or dtype.hasobject or dtype.kind in "OV":
            raise UserError(
                f"{self.path}: member {name!r} holds Python objects or records ({descr!r}); "
                "only plain numeric arrays are read (object arrays would need unpickling); re-save it as uint8"
            )
        if fortran and len(shape) > 1:
            raise UserError(f"{self.path}: member {name!r} is stored in Fortran order; re-save it with numpy.ascontiguousarray")
        if not shape:
            raise UserError(f"{self.path}: member {name!r} is a scalar, expected an array of rows")
        return Member(name, shape, dtype, offset)

    def iter_rows(self, name: str, chunk_bytes: int = CHUNK_BYTES, start: int = 0) -> Iterator[np.ndarray]:
        """Yield consecutive chunks of rows of one member, inflating only what each chunk needs."""
        m = self.members[name]
        n = m.shape[0]
        rows_per_chunk = max(1, chunk_bytes // max(1, m.row_nbytes))
        try:
            with self._zip.open(name + ".npy") as f:
                skip = m.data_offset + start * m.row_nbytes
                while skip > 0:
                    got = len(f.read(min(skip, CHUNK_BYTES)))
                    if got == 0:
                        raise EOFError("member ends early")
                    skip -= got
                row = start
                while row < n:
                    k = min(rows_per_chunk, n - row)
                    want = k * m.row_nbytes
                    buf = f.read(want)
                    if len(buf) != want:
                        raise EOFError(f"member ends after row {row + len(buf) // max(1, m.row_nbytes)} of {n}")
                    yield np.frombuffer(buf, dtype=m.dtype).reshape((k,) + m.shape[1:])
                    row += k
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise UserError(f"{self.path}: member {name!r} is damaged or truncated ({e}); download the file again") from None
