"""Whole batches of stored images to uint8 arrays, and label columns to training targets.

Opening each PNG through ``PIL.Image.open`` costs tens of microseconds of Python per image
(format sniffing, chunk parsing, a new Image object), more than decoding a 28 px image itself.
The images of an hfmed build are all plain 8-bit grayscale or RGB PNGs, so a batch is decoded with
one Pillow "zip" (PNG) decoder call per image, straight into its tile of one tall canvas that is
the batch's memory: the only Python left per image is reading the header and locating the pixel
data. Pillow releases the GIL inside the decoder, so several threads decode batches at once.
Anything else (palette, 16-bit, interlaced, another format or size) goes through
``PIL.Image.open`` and is converted, so a foreign image is slower, never wrong.
"""

from __future__ import annotations

import io
import threading
import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
from PIL import Image as PILImage

try:  # a dependency of hfmed (the PNG writer uses it); plain zlib gives the same bytes, slower
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover
    _zlib = zlib

try:  # ISA-L's inflate is about 1.5x zlib-ng's on PNG data; the bytes are the same either way
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - isal has wheels for x86-64 and ARM64 only
    _inflate_lib = _zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INFLATE_APART_BYTES = 4096  # above this, inflating in one call beats Pillow's row-by-row inflate
PNG_COLOR_TYPES = {0: "L", 2: "RGB"}  # 8-bit grayscale and truecolour: what hfmed writes


def _png_fast(blob: memoryview, mode: str, width: int, height: int) -> memoryview | bytes | None:
    """The zlib stream of a PNG the fast path can decode into a ``mode`` tile, or None."""
    if blob.format != "B":
        blob = blob.cast("B")
    if len(blob) < 33 or blob[:8] != PNG_SIGNATURE or blob[12:16] != b"IHDR":
        return None
    w = int.from_bytes(blob[16:20], "big")
    h = int.from_bytes(blob[20:24], "big")
    depth, color, _, _, interlace = blob[24], blob[25], blob[26], blob[27], blob[28]
    if w != width or h != height or depth != 8 or interlace or PNG_COLOR_TYPES.get(color) != mode:
        return None
    parts = []
    pos = 33
    end = len(blob)
    while pos + 8 <= end:
        n = int.from_bytes(blob[pos : pos + 4], "big")
        kind = blob[pos + 4 : pos + 8]
        if kind == b"IDAT":
            parts.append(blob[pos + 8 : pos + 8 + n])
        elif kind == b"IEND":
            break
        elif kind in (b"PLTE", b"tRNS"):
            return None  # transparency or a palette: let Pillow apply it
        pos += 12 + n
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _restore(data: memoryview | bytes) -> memoryview | bytes:
    """The same zlib stream, inflated in one call and re-wrapped uncompressed (stored blocks).

    Pillow's PNG decoder inflates a scanline at a time with its bundled zlib; at 224 px that costs
    about twice a single zlib-ng call and three times ISA-L's. Handing it stored blocks leaves it
    only the copying and the unfiltering, which it does in C. A damaged stream is returned as it
    was, for the decoder to report.
    """
    try:
        raw = _inflate_lib.decompress(data)
    except _inflate_lib.error:
        return data
    return _zlib.compress(raw, 0)


class BadImage(ValueError):
    """Image ``index`` of a batch cannot be decoded; the caller knows which file and row that is."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image {index} of the batch cannot be decoded ({reason})")
        self.index, self.reason = index, reason


def _slow(blob: memoryview | bytes, mode: str, width: int, height: int) -> np.ndarray:
    """Pillow's general path. Raises BadImage's reason as ValueError: any failure of a stored
    image (truncated, not an image, a decompression bomb) is a damaged build, not a bug here."""
    try:
        with PILImage.open(io.BytesIO(bytes(blob))) as im:
            im = im.convert(mode) if im.mode != mode else im
            if im.size != (width, height):
                im = im.resize((width, height), PILImage.Resampling.BILINEAR)
            return np.asarray(im)
    except PILImage.UnidentifiedImageError:
        raise ValueError("not an image Pillow can identify; truncated or overwritten") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ValueError(str(e).split("\n")[0][:200] or type(e).__name__) from None


class _Scratch(threading.local):
    """An RGBX buffer per thread, for batches asked for as packed RGB."""

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        buf = getattr(self, "buf", None)
        n = int(np.prod(shape))
        if buf is None or buf.size < n:
            buf = self.buf = np.empty(n, dtype=np.uint8)
        return buf[:n].reshape(shape)


_rgbx = _Scratch()


def decode_images(blobs: Sequence, out: np.ndarray) -> np.ndarray:
    """Decode ``blobs`` into ``out``: (n, H, W) uint8 for mode L; for RGB, (n, H, W, 4) or (n, H, W, 3).

    ``out`` must be C-contiguous. It is the canvas the decoder writes to: grayscale as it is, RGB
    as RGBX (Pillow's own layout for RGB, four bytes a pixel; the fourth byte is 255), so nothing
    is copied. Given (n, H, W, 3), the batch is decoded as RGBX and packed with one copy (an RGB
    canvas would be allocated by Pillow per batch, then packed by ``tobytes`` and copied again:
    a third of decoding a 224 px photo). Raises ``BadImage`` (with the blob's index) for an image
    that cannot be decoded.
    """
    n, height, width = out.shape[:3]
    if n == 0:
        return out
    if out.ndim == 4 and out.shape[3] == 3:
        rgbx = decode_images(blobs, _rgbx.get((n, height, width, 4)))
        torch.from_numpy(out).copy_(torch.from_numpy(rgbx)[..., :3])  # torch packs several times faster than numpy
        return out
    mode, layout = ("L", "L") if out.ndim == 3 else ("RGB", "RGBX")
    canvas = PILImage.frombuffer(layout, (width, n * height), out, "raw", layout, 0, 1)
    core = canvas.im
    foreign: list[tuple[int, object]] = []
    for i, blob in enumerate(blobs):
        data = _png_fast(memoryview(blob), mode, width, height)
        if data is None:
            foreign.append((i, blob))
            continue
        if len(data) > INFLATE_APART_BYTES:
            data = _restore(data)
        decoder = PILImage.core.zip_decoder(layout, mode)
        decoder.setimage(core, (0, i * height, width, (i + 1) * height))
        consumed, err = decoder.decode(data)
        decoder.cleanup()
        if consumed >= 0 or err != 0:  # ran out of data, or zlib/filter error: try the general path
            foreign.append((i, blob))
    for i, blob in foreign:
        try:
            pixels = _slow(blob, mode, width, height)
        except ValueError as e:
            raise BadImage(i, str(e)) from None
        if mode == "L":
            out[i] = pixels
        else:
            out[i, ..., :3] = pixels
            out[i, ..., 3] = 255
    return out


def binary_column(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The PNG bytes of an ``Image`` column (a struct of bytes and path)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.field("bytes") if pa.types.is_struct(column.type) else column


def blob_views(binary: pa.Array) -> list[memoryview]:
    """One zero-copy view per row into the Arrow data buffer (no Python bytes objects)."""
    if binary.null_count:
        raise ValueError("an image cell is empty")
    offsets_type = np.int64 if pa.types.is_large_binary(binary.type) else np.int32
    offsets = np.frombuffer(binary.buffers()[1], dtype=offsets_type)[binary.offset : binary.offset + len(binary) + 1]
    data = binary.buffers()[2]
    view = memoryview(data).cast("B") if data is not None else memoryview(b"")  # Arrow exports signed bytes
    bounds = offsets.tolist()
    return [view[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def volume_array(column: pa.Array | pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, D, H, W) uint8 straight from an ``Array3D`` column's flat buffer."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    storage = column.storage if isinstance(column, pa.ExtensionArray) else column
    flat = storage.flatten().flatten().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.uint8, copy=False).reshape((len(column), *shape))


def label_array(column: pa.Array | pa.ChunkedArray, num_labels: int, multi_label: bool) -> np.ndarray:
    """Class ids (int64, (n,)) for single-label columns; multi-hot uint8 (n, K) for lists of ids."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("a label cell is empty")
    if not multi_label:
        return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    out = np.zeros((len(column), num_labels), dtype=np.uint8)
    rows = column.value_parent_indices().to_numpy(zero_copy_only=False)
    ids = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
        raise ValueError(f"a label id is outside 0..{num_labels - 1}")
    out[rows, ids] = 1
    return out
