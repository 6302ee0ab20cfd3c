"""Proof that a build is lossless: every row read back equals the source, in order.

The source is read again through the same builder that wrote the shards (so a MedIMeta label key
is compared through the recorded mapping), and the shards are decoded independently of the
writer: PNG bytes through Pillow, lists and volumes straight from Arrow buffers.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Array3D, ClassLabel, Features, Image, List
from PIL import Image as PILImage

from hfmed import registry
from hfmed.errors import UserError
from hfmed.features import read_metadata

if TYPE_CHECKING:
    from datasets.features.features import FeatureType

    from hfmed.builder import Builder, SplitGenerator


class VerifyFailed(Exception):
    """The build differs from its source; the message names the first differing row."""


@dataclass
class SplitReport:
    split: str
    rows: int


def _decode_png(b: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(b)) as im:
        return np.asarray(im)


def _decode_column(feature: FeatureType, column: pa.Array, executor: Executor) -> list[Any]:
    if isinstance(feature, Image):
        return list(executor.map(_decode_png, column.field("bytes").to_pylist()))
    if isinstance(feature, Array3D):
        storage = column.storage if isinstance(column, pa.ExtensionArray) else column
        flat = storage.flatten().flatten().flatten().to_numpy(zero_copy_only=False)
        return list(flat.reshape((len(column),) + tuple(feature.shape)))
    if isinstance(feature, List) and isinstance(feature.feature, ClassLabel):
        k = feature.feature.num_classes
        out = []
        for ids in column.to_pylist():
            row = np.zeros(k, dtype=np.int64)
            row[ids] = 1
            out.append(row)
        return out
    return column.to_pylist()


def _shard_rows(files: list[Path], features: Features, executor: Executor) -> Iterator[dict[str, Any]]:
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
            cols = {name: _decode_column(features[name], batch.column(name), executor) for name in features}
            for i in range(batch.num_rows):
                yield {name: cols[name][i] for name in features}


def _source_rows(builder: Builder, split: SplitGenerator) -> Iterator[dict[str, Any]]:
    for batch in builder.batches(split):
        n = len(next(iter(batch.values())))
        for i in range(n):
            yield {k: v[i] for k, v in batch.items()}


def _equal(built: Any, source: Any) -> bool:
    b, s = np.asarray(built), np.asarray(source)
    if b.shape != s.shape and b.size == s.size == 1:
        b, s = b.reshape(-1), s.reshape(-1)
    return b.shape == s.shape and np.array_equal(b, s)


def verify(out_dir: str | Path, config: str, source: str | Path | None = None) -> list[SplitReport]:
    folder = Path(out_dir) / config
    shards = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not shards:
        raise UserError(f"{folder}: no built config there; build it first, or check --config and the folder name")
    features, meta = read_metadata(pq.read_schema(shards[0]))
    if not meta.get("collection"):
        raise UserError(f"{shards[0]}: not written by hfmed (no hfmed metadata); nothing to verify against")
    builder = registry.get(meta["collection"]).create(config, source, **meta.get("options", {}))
    reports = []
    with ThreadPoolExecutor() as executor:
        splits = builder.splits()
        built_splits = sorted({p.name.split("-", 1)[0] for p in shards})
        missing = sorted(set(built_splits) ^ {s.name for s in splits})
        if missing:
            raise VerifyFailed(f"{config}: splits differ between the build and the source: {', '.join(missing)}")
        for split in splits:
            files = sorted(folder.glob(f"{split.name}-*.parquet"))
            built_rows = _shard_rows(files, features, executor)
            n = 0
            for n, (b, s) in enumerate(zip(built_rows, _source_rows(builder, split)), start=1):
                for name in features:
                    if not _equal(b[name], s[name]):
                        raise VerifyFailed(
                            f"{config}: {split.name} row {n - 1}: column {name!r} differs from the source"
                        )
            total = sum(pq.read_metadata(f).num_rows for f in files)
            if total != split.num_rows or n != split.num_rows:
                raise VerifyFailed(
                    f"{config}: {split.name} has {total} rows in the build, {split.num_rows} in the source"
                )
            reports.append(SplitReport(split.name, n))
    return reports
