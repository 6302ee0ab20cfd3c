"""Streaming reader for ``.npz`` archives.

``numpy.load`` inflates a whole member at once (``mmap_mode`` is ignored for ``.npz``), and it may
unpickle object arrays. A 224 px MedMNIST file holds members of tens of GB, so rows are inflated
chunk by chunk straight from the zip stream. The ``.npy`` header is parsed by numpy's own reader
(``numpy.lib.format``, which never unpickles), after its declared length is capped as numpy caps
it, so that neither a huge nor a deeply nested header can exhaust memory or the stack.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from hfmed.errors import UserError

_MAGIC = b"\x93NUMPY"
MAX_HEADER_SIZE = 10_000  # numpy.load's own default cap (max_header_size), applied before reading it
_LENGTH_FORMAT = {1: "<H", 2: "<I", 3: "<I"}  # .npy version -> header length field
# What zipfile raises for members it cannot read: damaged data, encryption, unknown compression.
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)
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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            raise UserError(f"{self.path}: no such file; check the path given to --source") from None
        except OSError as e:
            raise UserError(f"{self.path}: cannot be read ({e.strerror}); check its permissions") from None
        if stat.S_ISDIR(mode):
            raise UserError(f"{self.path}: is a folder, not an .npz file; pass the .npz file itself")
        if not stat.S_ISREG(mode):  # a device or FIFO would never end, or block forever
            raise UserError(f"{self.path}: is not a regular file (a device, FIFO or socket); pass the .npz file itself")
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
            raise UserError(
                f"{self.path}: not an .npz archive (not a zip file); pass an official MedMNIST .npz file"
            ) from None
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

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_header(self, info: zipfile.ZipInfo) -> Member:
        name = info.filename[: -len(".npy")]
        try:
            with self._zip.open(info) as f:
                magic = f.read(8)
                if len(magic) < 8 or magic[:6] != _MAGIC:
                    raise UserError(
                        f"{self.path}: member {name!r} is not a .npy array; the archive is not a MedMNIST file"
                    )
                major = magic[6]
                if major not in _LENGTH_FORMAT:
                    raise UserError(
                        f"{self.path}: member {name!r} has unknown .npy version {major}; re-save it "
                        "with numpy.savez_compressed"
                    )
                field = f.read(struct.calcsize(_LENGTH_FORMAT[major]))
                (hlen,) = struct.unpack(_LENGTH_FORMAT[major], field)
                if hlen > MAX_HEADER_SIZE:
                    raise UserError(
                        f"{self.path}: member {name!r} declares a {hlen:,}-byte .npy header, over "
                        f"numpy's {MAX_HEADER_SIZE:,}-byte limit; "
                        "the file is damaged or not a MedMNIST file"
                    )
                raw = f.read(hlen)
        except _MEMBER_ERRORS as e:
            raise UserError(
                f"{self.path}: member {name!r} cannot be read ({_one_line(e)}); download the file again"
            ) from None
        except struct.error:
            raise UserError(
                f"{self.path}: member {name!r} ends inside its .npy header; download the file again"
            ) from None
        shape, fortran, dtype = self._parse_header(name, major, field, raw)
        offset = len(magic) + len(field) + hlen
        nbytes = dtype.itemsize * _product(shape)
        if offset + nbytes != info.file_size:
            raise UserError(
                f"{self.path}: member {name!r} declares shape {shape} of {dtype} ({nbytes:,} bytes) but holds "
                f"{max(0, info.file_size - offset):,} bytes of data; the file is damaged"
            )
        if fortran and len(shape) > 1:
            raise UserError(
                f"{self.path}: member {name!r} is stored in Fortran order; re-save it with numpy.ascontiguousarray"
            )
        return Member(name, shape, dtype, offset)

    def _parse_header(self, name: str, major: int, field: bytes, raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
        """Shape, order and dtype through numpy's header reader; nothing in the header can run code."""
        unreadable = f"{self.path}: member {name!r} has an unreadable .npy header"
        try:
            if major == 3:  # version 3 only changes the text encoding; numpy parses it as version 2
                raw = raw.decode("utf-8").encode("latin1")
            reader = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
            shape, fortran, dtype = reader(io.BytesIO(field + raw), max_header_size=MAX_HEADER_SIZE)
        except (ValueError, UnicodeError, SyntaxError, RecursionError, MemoryError, TypeError) as e:
            raise UserError(f"{unreadable} ({_one_line(e)[:120]}); the file is damaged") from None
        if dtype.hasobject or dtype.kind in "OVUSMmc" or dtype.names is not None:
            raise UserError(
                f"{self.path}: member {name!r} holds Python objects, text or records ({dtype.str!r}); "
                "only plain numeric arrays are read (object arrays would need unpickling); re-save it as uint8"
            )
        if not shape:
            raise UserError(f"{self.path}: member {name!r} is a scalar, expected an array of rows")
        if any(d < 0 for d in shape):
            raise UserError(
                f"{self.path}: member {name!r} declares a negative size in its shape {shape}; the file is damaged"
            )
        return tuple(shape), fortran, dtype

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
        except (*_MEMBER_ERRORS, OSError) as e:
            raise UserError(
                f"{self.path}: member {name!r} is damaged or truncated ({_one_line(e)}); download the file again"
            ) from None


def _product(shape: tuple[int, ...]) -> int:
    """Python integers, so that a crafted shape cannot overflow into a small size."""
    n = 1
    for d in shape:
        n *= d
    return n


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
