"""The Hub dataset viewer's own limits, applied offline to a build.

The viewer is open source (huggingface/dataset-viewer); every constant below is copied from its
source at commit f62009e0 (2026-08-20), with the file and constant named, so a change there is
one edit here. What the viewer does with a Parquet dataset, in the order a visitor meets it:

1. lists the configs and their splits (``dataset-config-names``, ``config-split-names``);
2. copies the Parquet files as they are (``config-parquet-and-info``) and reads them through
   ``libviewer``, which refuses any single read above ``ROWS_INDEX_MAX_ARROW_DATA_IN_MEMORY``
   bytes: a whole row group's compressed column chunks, or only the pages needed when the file
   has a page index;
3. shows the first page from ``split-first-rows``: up to ``MAX_NUM_ROWS_PER_PAGE`` rows, as JSON,
   cut to ``FIRST_ROWS_MAX_BYTES`` (rows dropped from the end down to ``FIRST_ROWS_MIN_NUMBER``,
   then cells of those rows cut to ``FIRST_ROWS_MIN_CELL_BYTES``, media cells never);
4. serves later pages from ``/rows``: ``MAX_NUM_ROWS_PER_PAGE`` rows, never cut.

Findings are errors where the viewer fails and warnings where it shows a config partly. The
functions take plain values (features, Parquet metadata, the first rows) and read nothing but
what they are given, except :func:`check_config`, which reads one config's shards.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import (
    Array2D,
    Array3D,
    Array4D,
    Array5D,
    Audio,
    ClassLabel,
    Features,
    Image,
    Json,
    LargeList,
    List,
    Pdf,
    Translation,
    TranslationVariableLanguages,
    Value,
    Video,
)

if TYPE_CHECKING:
    from datasets.features.features import FeatureType

# services/worker/src/worker/config.py, FIRST_ROWS_MAX_BYTES is 1_000_000, but the Hub runs with
# chart/env/prod.yaml `firstRows.maxBytes: "200_000"`: the production value is what visitors get.
FIRST_ROWS_MAX_BYTES = 200_000
FIRST_ROWS_MIN_NUMBER = 10  # services/worker/src/worker/config.py, FIRST_ROWS_MIN_NUMBER
FIRST_ROWS_MIN_CELL_BYTES = 100  # services/worker/src/worker/config.py, FIRST_ROWS_MIN_CELL_BYTES
FIRST_ROWS_COLUMNS_MAX_NUMBER = 1_000  # services/worker/src/worker/config.py, FIRST_ROWS_COLUMNS_MAX_NUMBER
WORKER_CONTENT_MAX_BYTES = (
    10_000_000  # services/worker/src/worker/config.py, WORKER_CONTENT_MAX_BYTES: a larger response fails its job
)
CONFIG_NAMES_MAX_NUMBER = 4_000  # services/worker/src/worker/config.py, CONFIG_NAMES_MAX_NUMBER
SPLIT_NAMES_MAX_NUMBER = 30  # services/worker/src/worker/config.py, SPLIT_NAMES_MAX_NUMBER
MAX_NUM_ROWS_PER_PAGE = 100  # libs/libcommon/src/libcommon/constants.py, MAX_NUM_ROWS_PER_PAGE (first rows and /rows)
MAX_COLUMN_NAME_LENGTH = 500  # libs/libcommon/src/libcommon/constants.py, MAX_COLUMN_NAME_LENGTH
# libs/libcommon/src/libcommon/config.py, ROWS_INDEX_MAX_ARROW_DATA_IN_MEMORY (also chart/env/prod.yaml
# rowsIndex.maxArrowDataInMemory): libs/libviewer/src/parquet.rs refuses a read of more bytes.
ROWS_INDEX_MAX_ARROW_DATA_IN_MEMORY = 300_000_000
# datasets/naming.py: INVALID_WINDOWS_CHARACTERS_IN_PATH (config names, refused by BuilderConfig)
# and _split_re (split names); the viewer lists configs and splits through datasets.
CONFIG_NAME_FORBIDDEN = "<>:/\\|?*"
SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
# Media cells become asset URLs and are never cut (libs/libcommon/src/libcommon/viewer_utils/rows.py,
# columns_to_keep_untruncated); the URL shape is StorageClient.generate_object_path in
# libs/libcommon/src/libcommon/storage_client.py, on the public assets host.
MEDIA_FEATURES = (Image, Audio, Pdf, Video)
ASSETS_BASE_URL = "https://datasets-server.huggingface.co/assets"
# Feature types get_cell_value (libs/libcommon/src/libcommon/viewer_utils/features.py) can show;
# any other raises TypeError and the config's first rows fail.
SHOWN_FEATURES = (
    *MEDIA_FEATURES,
    Json,
    Value,
    ClassLabel,
    Array2D,
    Array3D,
    Array4D,
    Array5D,
    Translation,
    TranslationVariableLanguages,
    List,
    LargeList,
)
ARRAY_FEATURES = (Array2D, Array3D, Array4D, Array5D)
# /rows has no size limit of its own: the page goes to the browser whole. We warn from the
# largest response the viewer lets a worker store (WORKER_CONTENT_MAX_BYTES), our choice of bar.
ROWS_PAGE_WARN_BYTES = WORKER_CONTENT_MAX_BYTES


@dataclass(frozen=True)
class Finding:
    where: str
    what: str
    error: bool  # the viewer fails; otherwise it shows the config partly


@dataclass
class FirstRows:
    """What the viewer's first page of one split holds, as ``create_truncated_row_items`` builds it."""

    rows: int  # rows on the first page
    wanted: int  # rows it would hold without the byte limit (MAX_NUM_ROWS_PER_PAGE, or fewer in the split)
    response_bytes: int  # the whole first-rows response: features and rows
    cut: dict[str, int] = field(default_factory=dict)  # column -> rows whose cell is cut
    page_bytes: int = 0  # the JSON of a full /rows page of the same rows, never cut


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


# --- names and features ------------------------------------------------------------------------


def name_findings(splits_by_config: dict[str, list[str]]) -> list[Finding]:
    """Config and split names the viewer (through datasets) lists, and how many."""
    out = []
    if len(splits_by_config) > CONFIG_NAMES_MAX_NUMBER:
        out.append(
            Finding(
                "README.md",
                f"{len(splits_by_config)} configs; the viewer lists at most "
                f"{CONFIG_NAMES_MAX_NUMBER:,} and shows none beyond",
                True,
            )
        )
    for config, splits in splits_by_config.items():
        bad = sorted(set(config) & set(CONFIG_NAME_FORBIDDEN))
        if not config or bad:
            out.append(
                Finding(
                    "README.md",
                    f"config name {config!r} holds {''.join(bad) or 'nothing'}; datasets refuses "
                    f"config names with any of {CONFIG_NAME_FORBIDDEN}, so the viewer cannot list it",
                    True,
                )
            )
        if len(splits) > SPLIT_NAMES_MAX_NUMBER:
            out.append(
                Finding(
                    f"{config}/",
                    f"{len(splits)} splits; the viewer refuses more than {SPLIT_NAMES_MAX_NUMBER} per config",
                    True,
                )
            )
        for split in splits:
            if not SPLIT_NAME.match(split):
                out.append(
                    Finding(
                        f"{config}/",
                        f"split name {split!r} does not match {SPLIT_NAME.pattern} (letters, digits, _ "
                        "and inner dots); datasets and the viewer refuse it",
                        True,
                    )
                )
    return out


def feature_findings(config: str, features: Features) -> list[Finding]:
    """Columns the viewer cannot show, or shows only as numbers."""
    out = []
    if len(features) > FIRST_ROWS_COLUMNS_MAX_NUMBER:
        out.append(
            Finding(
                f"{config}/", f"{len(features)} columns; the viewer shows at most {FIRST_ROWS_COLUMNS_MAX_NUMBER}", True
            )
        )
    for name, feature in features.items():
        if len(name) > MAX_COLUMN_NAME_LENGTH:
            out.append(
                Finding(
                    f"{config}/",
                    f"column name {name[:40]!r}... is {len(name)} characters; the viewer refuses "
                    f"names over {MAX_COLUMN_NAME_LENGTH}",
                    True,
                )
            )
        if not isinstance(feature, SHOWN_FEATURES) and not isinstance(feature, (dict, list)):
            out.append(
                Finding(
                    f"{config}/",
                    f"column {name!r} is a {type(feature).__name__}, which the viewer cannot show; its first rows fail",
                    True,
                )
            )
    media = [n for n, f in features.items() if isinstance(f, MEDIA_FEATURES)]
    arrays = [n for n, f in features.items() if isinstance(f, ARRAY_FEATURES)]
    if arrays and not media:
        out.append(
            Finding(
                f"{config}/",
                f"column(s) {', '.join(map(repr, arrays))} are shown as lists of numbers and "
                "nothing else in the config is drawn; add an image column (a preview)",
                False,
            )
        )
    elif arrays and list(features).index(arrays[0]) < list(features).index(media[0]):
        out.append(
            Finding(
                f"{config}/",
                f"column {arrays[0]!r} (numbers) comes before {media[0]!r} (drawn); the viewer "
                "shows columns in this order",
                False,
            )
        )
    return out


def opening_findings(default: str | None, features_by_config: dict[str, Features]) -> list[Finding]:
    """The config the viewer opens on: the card's default, else the first by name
    (services/worker/src/worker/job_runners/dataset/config_names.py sorts the default first).
    A visitor should meet pictures there, not a 3D volume shown as numbers."""
    if not features_by_config:
        return []
    opening = default if default in features_by_config else sorted(features_by_config)[0]
    features = features_by_config[opening]
    if any(isinstance(f, ARRAY_FEATURES) for f in features.values()):
        drawn = [c for c, f in features_by_config.items() if not any(isinstance(x, ARRAY_FEATURES) for x in f.values())]
        hint = f"; mark a 2D config such as {drawn[0]!r} `default: true`" if drawn else ""
        return [
            Finding(
                "README.md",
                f"the viewer opens on {opening!r}, whose volumes it shows only as cut lists of numbers{hint}",
                False,
            )
        ]
    return []


# --- row groups --------------------------------------------------------------------------------


def row_group_findings(where: str, metadata: pq.FileMetaData, datasets_limit: int) -> list[Finding]:
    """Row groups as libviewer reads them (compressed bytes) and as datasets writes them (uncompressed)."""
    out = []
    for g in range(metadata.num_row_groups):
        rg = metadata.row_group(g)
        columns = [rg.column(j) for j in range(rg.num_columns)]
        compressed = sum(c.total_compressed_size for c in columns)
        paged = all(c.has_offset_index for c in columns)
        if compressed > ROWS_INDEX_MAX_ARROW_DATA_IN_MEMORY and not paged:
            out.append(
                Finding(
                    where,
                    f"row group {g} holds {_mb(compressed)} compressed and the file has no page "
                    f"index; the viewer reads at most {_mb(ROWS_INDEX_MAX_ARROW_DATA_IN_MEMORY)} at "
                    "once and cannot show these rows; rebuild with smaller row groups",
                    True,
                )
            )
        if rg.total_byte_size > datasets_limit:
            out.append(
                Finding(
                    where,
                    f"row group {g} holds {_mb(rg.total_byte_size)} uncompressed, over the "
                    f"{_mb(datasets_limit)} datasets writes at most (config.MAX_ROW_GROUP_SIZE); "
                    "every streaming reader holds a whole row group",
                    False,
                )
            )
    return out


# --- the first page ----------------------------------------------------------------------------


def _int_digits(values: np.ndarray) -> np.ndarray:
    """Characters of each integer as JSON writes it, per row of a (rows, n) array."""
    v = values.astype(np.int64)
    a = np.abs(v)
    chars = np.ones(v.shape, dtype=np.int64) + (v < 0)
    t = 10
    while t <= max(int(a.max(initial=0)), 9):
        chars += a >= t
        t *= 10
    return chars.sum(axis=1)


def _array_sizes(feature: Array2D | Array3D | Array4D | Array5D, column: pa.Array) -> list[int] | None:
    """JSON bytes of each fixed-shape integer array cell, from its flat values (no Python lists)."""
    shape = tuple(feature.shape)
    if any(s is None for s in shape) or not np.issubdtype(np.dtype(feature.dtype), np.integer):
        return None
    storage = column.storage if isinstance(column, pa.ExtensionArray) else column
    leaves = storage
    for _ in shape:
        leaves = leaves.flatten()
    per_row = int(np.prod(shape))
    values = leaves.to_numpy(zero_copy_only=False).reshape(len(column), per_row)
    lists = sum(int(np.prod(shape[:k])) for k in range(len(shape)))
    elements = sum(int(np.prod(shape[: k + 1])) for k in range(len(shape)))
    return list(_int_digits(values) + 2 * lists + (elements - lists))


class UnreadableImage(ValueError):
    """A cell the viewer's PIL.Image.open refuses: its first rows fail (RowsPostProcessingError)."""


def _image_size(data: bytes) -> tuple[int, int]:
    from io import BytesIO

    from PIL import Image as PILImage

    try:
        return PILImage.open(BytesIO(data)).size  # reads the header only
    except Exception as e:
        raise UnreadableImage(str(e)) from None


def _bytes_as_text(value: object) -> str:
    """orjson_default (libs/libcommon/src/libcommon/utils.py): bytes go out as base64 text."""
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    return str(value)


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_bytes_as_text).encode()


def _image_cell(cell: dict[str, Any] | None, url: str) -> dict:
    """An image cell as the viewer sends it: the URL of its asset and its size (ImageSource)."""
    w, h = _image_size(cell["bytes"]) if cell and cell.get("bytes") else (0, 0)
    return {"src": url, "height": h, "width": w}


def _cut_size(serialized: bytes) -> int:
    """Size of a cell cut by serialize_and_truncate (libs/libcommon/src/libcommon/utils.py).

    The cut cell is a JSON string of the cell's first bytes.
    """
    head = serialized[:FIRST_ROWS_MIN_CELL_BYTES].decode("utf-8", "ignore")
    return len(_dumps(head))


def cell_sizes(name: str, feature: FeatureType, column: pa.Array, asset_url: str) -> tuple[list[int], list[int]]:
    """JSON bytes of each cell as the viewer sends it, and once cut (equal where it is never cut)."""
    if isinstance(feature, Image):
        sizes = [
            len(_dumps(_image_cell(cell, asset_url.format(row=i, column=quote(name)))))
            for i, cell in enumerate(column.to_pylist())
        ]
        return sizes, sizes
    if isinstance(feature, (List, LargeList)) and isinstance(feature.feature, Image):
        # each image an asset named image-<hash of its place>.jpg (append_hash_suffix in viewer_utils/features.py);
        # nested media are not kept whole: the cell can be cut like any other
        url = asset_url.replace("image.jpg", "image-0000000.jpg")
        serialized = [
            _dumps([_image_cell(c, url.format(row=i, column=quote(name))) for c in cells or []])
            for i, cells in enumerate(column.to_pylist())
        ]
        return [len(x) for x in serialized], [
            len(x) if len(x) <= FIRST_ROWS_MIN_CELL_BYTES else _cut_size(x) for x in serialized
        ]
    if isinstance(feature, MEDIA_FEATURES):
        sizes = [
            len(_dumps({"src": asset_url.format(row=i, column=quote(name)), "type": "media"}))
            for i in range(len(column))
        ]
        return sizes, sizes
    if isinstance(feature, ARRAY_FEATURES):
        sizes = _array_sizes(feature, column)
        if sizes is not None:  # the first bytes of a numeric array are digits, commas and brackets
            return sizes, [s if s <= FIRST_ROWS_MIN_CELL_BYTES else FIRST_ROWS_MIN_CELL_BYTES + 2 for s in sizes]
    serialized = [_dumps(v) for v in column.to_pylist()]
    return [len(s) for s in serialized], [
        len(s) if len(s) <= FIRST_ROWS_MIN_CELL_BYTES else _cut_size(s) for s in serialized
    ]


def _item_size(row_idx: int, row_bytes: int, cut: list[str]) -> int:
    """``{"row_idx":i,"row":{...},"truncated_cells":[...]}`` (to_row_item in viewer_utils/truncate_rows.py)."""
    names = len(_dumps(cut))
    return len('{"row_idx":') + len(str(row_idx)) + len(',"row":') + row_bytes + len(',"truncated_cells":') + names + 1


def first_rows(
    features: Features, table: pa.Table, num_rows_total: int, *, dataset: str, config: str, split: str
) -> FirstRows:
    """The first page of one split, rebuilt as create_first_rows_response and create_truncated_row_items build it.

    ``table`` holds the split's first rows (at most ``MAX_NUM_ROWS_PER_PAGE``); sizes are those of
    the viewer's JSON (orjson: no spaces, UTF-8), image cells as asset URLs on the public host.
    """
    n = min(len(table), MAX_NUM_ROWS_PER_PAGE)
    where = f"{quote(dataset)}/--/{'0' * 40}/--/{quote(config)}/{quote(split)}"  # dataset, revision, config, split
    asset_url = f"{ASSETS_BASE_URL}/{where}/{{row}}/{{column}}/image.jpg"
    full: dict[str, list[int]] = {}
    cut: dict[str, list[int]] = {}
    for name, feature in features.items():
        full[name], cut[name] = cell_sizes(name, feature, table.column(name).combine_chunks()[:n], asset_url)
    keys = {name: len(_dumps(name)) + 1 for name in features}  # "name":

    def row_bytes(i: int, cut_columns: list[str]) -> int:
        return 2 + (len(keys) - 1) + sum(keys[c] + (cut if c in cut_columns else full)[c][i] for c in features)

    features_json = [{"feature_idx": i, "name": k, "type": v} for i, (k, v) in enumerate(features.to_dict().items())]
    surrounding = len(
        _dumps(
            {
                "dataset": dataset,
                "config": config,
                "split": split,
                "features": features_json,
                "rows": [],
                "truncated": False,
            }
        )
    )
    page_bytes = 2 + sum(_item_size(i, row_bytes(i, []), []) + 1 for i in range(n))
    rows_bytes = 2
    cut_cells: dict[int, list[str]] = {}
    sizes = []
    for i in range(min(FIRST_ROWS_MIN_NUMBER, n)):
        sizes.append(_item_size(i, row_bytes(i, []), []))
        rows_bytes += sizes[-1] + 1
    if rows_bytes >= FIRST_ROWS_MAX_BYTES:  # keep the minimum, cut cells from the last row back
        cuttable = [c for c, f in features.items() if not isinstance(f, MEDIA_FEATURES)]
        for i in reversed(range(len(sizes))):
            if rows_bytes < FIRST_ROWS_MAX_BYTES:
                break
            cut_cells[i] = [c for c in cuttable if full[c][i] > FIRST_ROWS_MIN_CELL_BYTES]
            new = _item_size(i, row_bytes(i, cut_cells[i]), cut_cells[i])
            rows_bytes += new - sizes[i]
        kept = len(sizes)
    else:
        kept = len(sizes)
        for i in range(len(sizes), n):
            size = _item_size(i, row_bytes(i, []), [])
            if rows_bytes + size + 1 >= FIRST_ROWS_MAX_BYTES:
                break
            rows_bytes += size + 1
            kept += 1
    counts: dict[str, int] = {}
    for columns in cut_cells.values():
        for c in columns:
            counts[c] = counts.get(c, 0) + 1
    return FirstRows(kept, min(MAX_NUM_ROWS_PER_PAGE, num_rows_total), surrounding + rows_bytes, counts, page_bytes)


def first_rows_findings(config: str, pages: dict[str, FirstRows]) -> list[Finding]:
    """One line per kind of first page: splits whose pages look alike are named together."""
    groups: dict[tuple, list[str]] = {}
    for split, p in pages.items():
        if p.response_bytes > WORKER_CONTENT_MAX_BYTES:
            key: tuple = ("fails",)
        else:
            key = ("partial", p.rows, p.wanted, tuple(sorted(p.cut.items())), p.page_bytes > ROWS_PAGE_WARN_BYTES)
        groups.setdefault(key, []).append(split)
    out = []
    for key, splits in groups.items():
        where = f"{config}/" + (",".join(splits) if len(splits) > 1 else splits[0])
        p = pages[splits[0]]
        if key[0] == "fails":
            out.append(
                Finding(
                    where,
                    f"the viewer's first page would be {p.response_bytes:,} bytes even with every "
                    f"cell cut, over the {WORKER_CONTENT_MAX_BYTES:,} a worker may store: the first "
                    "rows fail",
                    True,
                )
            )
            continue
        parts = []
        if p.rows < p.wanted:
            parts.append(
                f"the first page holds {p.rows} of {p.wanted} rows (the viewer's first rows are "
                f"cut at {FIRST_ROWS_MAX_BYTES:,} bytes of JSON)"
            )
        if p.cut:
            cells = ", ".join(f"{c!r} in {k} row(s)" for c, k in sorted(p.cut.items()))
            parts.append(f"cells cut to {FIRST_ROWS_MIN_CELL_BYTES} characters: {cells}")
        if p.page_bytes > ROWS_PAGE_WARN_BYTES:
            parts.append(
                f"each later page of {MAX_NUM_ROWS_PER_PAGE} rows (/rows, never cut) is about "
                f"{_mb(p.page_bytes)} of JSON"
            )
        if parts:
            out.append(Finding(where, "; ".join(parts), False))
    return out


# --- one config, read from its shards ----------------------------------------------------------


def _head(files: list[Path], rows: int) -> pa.Table:
    """The first ``rows`` rows of a split, from its shards in name order (as the viewer orders them)."""
    parts, have = [], 0
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=rows - have):
            parts.append(batch)
            have += batch.num_rows
            if have >= rows:
                return pa.Table.from_batches(parts)
    return pa.Table.from_batches(parts) if parts else pa.table({})


def check_config(
    folder: Path, config: str, splits: dict[str, list[Path]], features: Features, dataset: str, datasets_limit: int
) -> list[Finding]:
    """Every viewer rule for one built config: features, row groups, and the first page of each split."""
    out = feature_findings(config, features)
    if any(f.error for f in out):
        return out
    pages = {}
    for split, files in splits.items():
        total = 0
        try:
            for rel in files:
                metadata = pq.read_metadata(folder / rel)
                total += metadata.num_rows
                out += row_group_findings(rel.as_posix(), metadata, datasets_limit)
            head = _head([folder / rel for rel in sorted(files)], MAX_NUM_ROWS_PER_PAGE)
        except (OSError, pa.ArrowException):  # an unreadable shard: hfmed.hub reports it already
            continue
        if head.num_rows and Features.from_arrow_schema(head.schema) == features:  # else hfmed.hub reports the mismatch
            try:
                pages[split] = first_rows(features, head, total, dataset=dataset, config=config, split=split)
            except UnreadableImage as e:
                out.append(
                    Finding(
                        f"{config}/{split}",
                        f"an image among the first {MAX_NUM_ROWS_PER_PAGE} rows does not open with "
                        f"Pillow ({e}); the viewer's first rows fail",
                        True,
                    )
                )
    return out + first_rows_findings(config, pages)
