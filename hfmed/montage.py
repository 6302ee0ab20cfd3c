"""Sample montages: one PNG per config, linked from the dataset card.

A reader of the card should see what the images look like before downloading anything, and the
montage must not break the build's promise of byte-identical output. So the samples are chosen
by rule (the first training rows of each class, classes top to bottom in id order), tiles are
resized with integer factors only, and the PNG is written without timestamps or other varying
chunks: the same shards always give the same bytes.

Only a handful of row groups are read (labels first, then the image column of the groups that
hold the chosen rows), so a montage of a 224 px config costs a few megabytes of reading.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
from datasets import Array3D, ClassLabel, Image, List
from PIL import Image as PILImage

if TYPE_CHECKING:
    from datasets import Features

    from hfmed.cards import ConfigSummary

MONTAGE_DIR = "images"  # beside the config folders; no data_files glob reaches it
TILE = 64  # target tile height in pixels; reached by integer scaling only
PER_ROW_2D = 8
PER_ROW_3D = 4  # a 3D preview is three slices wide
MAX_ROWS = 16  # classes beyond this are left out of the picture (the card's table lists them all)
GAP = 2
BACKGROUND = 255


def note(volumetric: bool) -> str:
    """The card's one-sentence caption of how the montage samples were picked."""
    text = "Each montage row shows the first training samples of one class, classes from top to bottom in id order"
    if volumetric:
        text += "; a 3D sample is shown by its preview, the middle slices along the three axes"
    return text + "."


@dataclass(frozen=True)
class Columns:
    image: str
    label: str
    multi_label: bool


def columns(features: Features) -> Columns | None:
    """The first image column and the first label column, in feature order.

    For 3D configs the image column is ``preview`` (the volume itself is an Array3D); for
    MedIMeta it is ``image`` and the first task, which is the dataset's main task.
    """
    image = next((k for k, f in features.items() if isinstance(f, Image)), None)
    label = None
    multi = False
    for k, f in features.items():
        if isinstance(f, ClassLabel):
            label = k
            break
        if isinstance(f, List) and isinstance(f.feature, ClassLabel):
            label, multi = k, True
            break
    if image is None or label is None:
        return None
    return Columns(image, label, multi)


def is_volumetric(features: Features) -> bool:
    return any(isinstance(f, Array3D) for f in features.values())


def num_classes(features: Features, label: str) -> int:
    f = features[label]
    return (f.feature if isinstance(f, List) else f).num_classes


def pick(labels: list, classes: int, per_class: int, multi_label: bool) -> list[list[int]]:
    """Row indices of the first ``per_class`` rows of each class (for multi-label: having it)."""
    chosen: list[list[int]] = [[] for _ in range(min(classes, MAX_ROWS))]
    missing = len(chosen) * per_class
    for i, value in enumerate(labels):
        for c in value if multi_label else (value,):
            if c is not None and 0 <= c < len(chosen) and len(chosen[c]) < per_class:
                chosen[c].append(i)
                missing -= 1
        if missing == 0:
            break
    return chosen


def _read_rows(files: list[Path], column: str, rows: set[int]) -> dict[int, bytes]:
    """PNG bytes of the wanted rows, reading only the row groups that hold them."""
    out: dict[int, bytes] = {}
    start = 0
    for path in files:
        pf = pq.ParquetFile(path)
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            wanted = sorted(r - start for r in rows if start <= r < start + n)
            if wanted:
                values = pf.read_row_group(g, columns=[column]).column(column)
                for r in wanted:
                    out[start + r] = values[r].as_py()["bytes"]
            start += n
    return out


def _tile(data: bytes) -> PILImage.Image:
    img = PILImage.open(io.BytesIO(data))
    img.load()
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    h = img.height
    if h < TILE:
        k = max(1, TILE // h)
        img = img.resize((img.width * k, h * k), PILImage.Resampling.NEAREST)
    elif h > TILE:
        img = img.reduce(-(-h // TILE))  # box filter by the smallest integer factor that fits
    return img


def compose(rows: list[list[PILImage.Image | None]]) -> PILImage.Image:
    """Tiles in a grid on a white background; an empty cell stays white."""
    tiles = [t for row in rows for t in row if t is not None]
    mode = "RGB" if any(t.mode == "RGB" for t in tiles) else "L"
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    cols = max(len(row) for row in rows)
    canvas = PILImage.new(mode, (cols * (w + GAP) + GAP, len(rows) * (h + GAP) + GAP), (BACKGROUND,) * len(mode))
    for y, row in enumerate(rows):
        for x, t in enumerate(row):
            if t is not None:
                canvas.paste(t.convert(mode), (GAP + x * (w + GAP), GAP + y * (h + GAP)))
    return canvas


def png(image: PILImage.Image) -> bytes:
    """PNG bytes whose only optional chunk is hfmed's mark, so equal pixels give equal files."""
    from PIL.PngImagePlugin import PngInfo

    from hfmed.outdir import PNG_MARK

    mark = PngInfo()
    mark.add_text(*PNG_MARK)  # how a rebuild knows the file is its own to replace
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, pnginfo=mark)
    return buf.getvalue()


def montage(config: ConfigSummary) -> bytes | None:
    """The montage PNG of one scanned config (a ``cards.ConfigSummary``), or None if it has no images."""
    cols = columns(config.features)
    if cols is None or not config.splits:
        return None
    split = next((s for s in config.splits if s.name == "train"), config.splits[0])
    labels: list = []
    for path in split.files:
        labels.extend(pq.read_table(path, columns=[cols.label]).column(cols.label).to_pylist())
    per_row = PER_ROW_3D if is_volumetric(config.features) else PER_ROW_2D
    chosen = pick(labels, num_classes(config.features, cols.label), per_row, cols.multi_label)
    wanted = {i for row in chosen for i in row}
    if not wanted:
        return None
    data = _read_rows(split.files, cols.image, wanted)
    grid = [[_tile(data[i]) for i in row] + [None] * (per_row - len(row)) for row in chosen]
    return png(compose(grid))


def relative_path(config_name: str) -> str:
    return f"{MONTAGE_DIR}/{config_name}.png"
