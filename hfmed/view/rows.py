"""Rows of one split read in place from its shards: only the row groups that hold the rows asked for.

A split is its shards in name order, each shard a run of row groups; the footers say how many rows
each group holds, so a row index maps to (shard, group, offset) without reading any data. Cells are
turned into what the page draws: images as ``data:`` URIs, class labels with their names, volumes
left out of the row (the page asks for one volume at a time).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hfmed.view.catalog import Broken, Column, open_parquet

VOLUME_BATCH = 8  # volumes decoded at a time while seeking one in its row group
MAX_TEXT = 300  # characters of a text cell shown, like the Hub viewer's cell truncation
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
    (b"BM", "image/bmp"),
)


@dataclass(frozen=True)
class Group:
    path: Path
    index: int  # row group within the shard
    start: int  # first row of the group within the split
    rows: int


def groups(files: list[Path]) -> list[Group]:
    """Every row group of the split, from the footers only."""
    out, start = [], 0
    for path in files:
        md = open_parquet(path).metadata
        for i in range(md.num_row_groups):
            n = md.row_group(i).num_rows
            out.append(Group(path, i, start, n))
            start += n
    return out


def num_rows(files: list[Path]) -> int:
    return sum(open_parquet(p).metadata.num_rows for p in files)


def _read(group: Group, columns: list[str]) -> pa.Table:
    try:
        return open_parquet(group.path).read_row_group(group.index, columns=columns)
    except Broken:
        raise
    except Exception as e:  # a damaged page: pyarrow's errors vary by what is damaged
        raise Broken(
            f"{group.path.parent.name}/{group.path.name}: row group {group.index} cannot be "
            f"read ({e}); rebuild this config with `hfmed build --overwrite`"
        ) from None


def _mime(data: bytes) -> str:
    return next((m for magic, m in _MAGIC if data.startswith(magic)), "application/octet-stream")


def cell(column: Column, value: Any) -> object:
    """One cell as JSON for the page (``value`` as Arrow's ``to_pylist`` gives it: any type a column holds)."""
    if value is None:
        return None
    if column.kind == "image":
        data = value.get("bytes") if isinstance(value, dict) else None
        if not data:
            return None
        return {"src": f"data:{_mime(data)};base64,{base64.b64encode(data).decode()}"}
    if column.kind == "class_label":
        return {"id": value, "name": column.names[value] if 0 <= value < len(column.names) else None}
    if column.kind == "label_list":
        return [{"id": v, "name": column.names[v] if 0 <= v < len(column.names) else None} for v in value]
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def read_rows(files: list[Path], indices: list[int], columns: list[Column]) -> list[dict]:
    """The given rows of a split (ascending indices), each ``{"row_idx": i, "cells": {...}}``.

    Volumes are not read here: a page of 100 of them would be tens of megabytes the table never
    shows; their cell holds the shape, and the page fetches the one being scrubbed.
    """
    wanted = [c for c in columns if c.kind != "array3d"]
    out = []
    pending = sorted(indices)
    for g in groups(files):
        local = [i - g.start for i in pending if g.start <= i < g.start + g.rows]
        if not local:
            continue
        table = _read(g, [c.name for c in wanted]).take(pa.array(local))
        values = {c.name: table.column(c.name).to_pylist() for c in wanted}
        for j, i in enumerate(local):
            cells = {c.name: cell(c, values[c.name][j]) for c in wanted}
            cells.update({c.name: {"shape": list(c.shape)} for c in columns if c.kind == "array3d"})
            out.append({"row_idx": g.start + i, "cells": {c.name: cells[c.name] for c in columns}})
    return out


def label_values(files: list[Path], column: Column) -> list[pa.Array]:
    """The whole label column of a split, one array per row group (nothing else is read)."""
    return [_read(g, [column.name]).column(column.name).combine_chunks() for g in groups(files)]


def matching(files: list[Path], column: Column, label: int) -> np.ndarray:
    """Indices of the rows having ``label`` (for a list of labels: containing it; -1: the empty list)."""
    hits, start = [], 0
    for values in label_values(files, column):
        if column.kind == "label_list":
            if label < 0:
                mask = pc.equal(pc.list_value_length(values), 0)
            else:
                parents = pc.list_parent_indices(values).to_numpy()
                flat = pc.list_flatten(values).to_numpy(zero_copy_only=False)
                mask = np.zeros(len(values), dtype=bool)
                mask[parents[flat == label]] = True
                mask = pa.array(mask)
        else:
            mask = pc.equal(values, label)
        hits.append(np.flatnonzero(mask.to_numpy(zero_copy_only=False).astype(bool)) + start)
        start += len(values)
    return np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)


def label_counts(files: list[Path], column: Column) -> dict:
    """Rows per class of a split (lists of labels: rows having the class; ``empty``: rows with none)."""
    k = len(column.names)
    counts = np.zeros(k, dtype=np.int64)
    empty = 0
    for values in label_values(files, column):
        if column.kind == "label_list":
            empty += int(pc.sum(pc.equal(pc.list_value_length(values), 0)).as_py() or 0)
            values = pc.list_flatten(values)
        ids = values.to_numpy(zero_copy_only=False)
        ids = ids[(ids >= 0) & (ids < k)].astype(np.int64)
        counts += np.bincount(ids, minlength=k)
    out = {"counts": counts.tolist()}
    if column.kind == "label_list":
        out["empty"] = empty
    return out


def volume(files: list[Path], index: int, column: Column) -> bytes:
    """The raw bytes of one volume (C order, the column's shape), read from its row group alone.

    The group is decoded in small batches up to the row wanted: nested lists decode slowly, and a
    whole group of volumes (16 MiB raw) costs several times what the rows before this one do.
    """
    for g in groups(files):
        if g.start <= index < g.start + g.rows:
            local = index - g.start
            try:
                batches = open_parquet(g.path).iter_batches(
                    batch_size=VOLUME_BATCH, row_groups=[g.index], columns=[column.name]
                )
                batch = next(b for i, b in enumerate(batches) if local < (i + 1) * VOLUME_BATCH)
            except Broken:
                raise
            except Exception as e:  # a damaged page
                raise Broken(
                    f"{g.path.parent.name}/{g.path.name}: row group {g.index} cannot be read ({e}); "
                    "rebuild this config with `hfmed build --overwrite`"
                ) from None
            values = batch.column(0).slice(local % VOLUME_BATCH, 1)
            if isinstance(values, pa.ExtensionArray):
                values = values.storage
            while (
                pa.types.is_list(values.type)
                or pa.types.is_fixed_size_list(values.type)
                or pa.types.is_large_list(values.type)
            ):
                values = values.flatten()
            data = values.to_numpy(zero_copy_only=False)
            if data.dtype != np.uint8:  # the page draws bytes: other types are stretched to 0..255
                lo, hi = float(data.min(initial=0)), float(data.max(initial=0))
                data = np.round((data - lo) * (255.0 / (hi - lo or 1.0))).astype(np.uint8)
            if data.size != int(np.prod(column.shape)):
                raise Broken(
                    f"{g.path.parent.name}/{g.path.name}: row {index} of {column.name!r} holds "
                    f"{data.size} values, not {column.shape}"
                )
            return data.tobytes()
    raise IndexError(index)
