"""Turning batches of source arrays into Arrow tables typed by ``datasets`` features.

Builders yield plain numpy columns; this module is the one place that knows how each feature
type is stored, so every collection gets the same lossless encoding. PNG encoding dominates the
cost of a build, and both numpy and the deflate library release the GIL, so images are encoded
(``hfmed.png``) by a thread pool in contiguous slices (order is kept, output is deterministic).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Array3D, ClassLabel, Features, Image, List

from hfmed import png

HFMED_METADATA_KEY = b"hfmed"


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of one uint8 image: (H, W) gives mode L, (H, W, 3) mode RGB."""
    return png.encode_batch(np.asarray(array)[None])[0]


def _encode_slice(images: np.ndarray) -> list[bytes]:
    return png.encode_batch(np.ascontiguousarray(images))


def encode_images(images: np.ndarray, executor: Executor | None, parts: int) -> list[bytes]:
    """PNG-encode a batch, split into ``parts`` contiguous slices run on ``executor``."""
    if executor is None or parts <= 1 or len(images) < 2 * parts:
        return _encode_slice(images)
    bounds = np.linspace(0, len(images), parts + 1).astype(int)
    out: list[bytes] = []
    for chunk in executor.map(_encode_slice, [images[a:b] for a, b in zip(bounds[:-1], bounds[1:])]):
        out.extend(chunk)
    return out


def _image_array(encoded: list[bytes]) -> pa.Array:
    return pa.StructArray.from_arrays(
        [pa.array(encoded, type=pa.binary()), pa.nulls(len(encoded), type=pa.string())], names=["bytes", "path"]
    )


def _label_lists(values: Any) -> pa.Array:
    """Multi-hot rows (N, K) of 0/1 become lists of the positive class ids."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        rows, cols = np.nonzero(values)
        offsets = np.zeros(len(values) + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=len(values)), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols.astype(np.int64)))
    return pa.array([list(map(int, v)) for v in values], type=pa.list_(pa.int64()))


def _array3d(values: np.ndarray, feature: Array3D, arrow_type: pa.DataType) -> pa.Array:
    """Nested lists built from offsets over one flat buffer: no per-voxel Python objects."""
    n, d, h, w = values.shape
    flat = pa.array(np.ascontiguousarray(values, dtype=feature.dtype).reshape(-1))
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d * h * w + 1, w, dtype=np.int32)), flat)
    middle = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d * h + 1, h, dtype=np.int32)), inner)
    outer = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), middle)
    return pa.ExtensionArray.from_storage(arrow_type, outer)


def encode_batch(
    features: Features, batch: Mapping[str, Any], executor: Executor | None = None, parts: int = 1
) -> pa.Table:
    """Build the Arrow table of one batch, with exactly ``features.arrow_schema``."""
    schema = features.arrow_schema
    arrays = []
    for name, feature in features.items():
        values = batch[name]
        arrow_type = schema.field(name).type
        if isinstance(feature, Image):
            arrays.append(_image_array(encode_images(values, executor, parts)))
        elif isinstance(feature, ClassLabel):
            arrays.append(pa.array(np.asarray(values).astype(np.int64).reshape(-1), type=arrow_type))
        elif isinstance(feature, List) and isinstance(feature.feature, ClassLabel):
            arrays.append(_label_lists(values))
        elif isinstance(feature, Array3D):
            arrays.append(_array3d(values, feature, arrow_type))
        else:
            arrays.append(pa.array(values, type=arrow_type))
    return pa.Table.from_arrays(arrays, schema=schema)


def schema_with_metadata(features: Features, metadata: Mapping[str, Any]) -> pa.Schema:
    """The features' schema plus our own facts (collection, config, source checksum) for later steps."""
    schema = features.arrow_schema
    meta = dict(schema.metadata or {})
    meta[HFMED_METADATA_KEY] = json.dumps(dict(metadata), sort_keys=True).encode()
    return schema.with_metadata(meta)


def read_metadata(schema: pa.Schema) -> tuple[Features, dict]:
    """Features and hfmed facts stored in a shard's schema."""
    meta = schema.metadata or {}
    features = Features.from_arrow_schema(schema)
    ours = json.loads(meta[HFMED_METADATA_KEY]) if HFMED_METADATA_KEY in meta else {}
    return features, ours
