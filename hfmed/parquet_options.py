"""How hfmed's shards are laid out in Parquet: the options of ``pyarrow.parquet.ParquetWriter``.

Chosen by ``benchmarks/bench_parquet.py`` against today's writer and ``datasets``' own defaults
for the Hub (``datasets.arrow_writer.ParquetWriter``); figures in BENCHMARKS.md. ``VARIANTS``
keeps the layouts that were compared, so the benchmark can rerun them; ``CHOSEN`` is what builds use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from datasets import Features


def _statistics(schema: pa.Schema) -> list[str]:
    """Min/max statistics, left out for image structs and label lists, where they are bytes of noise."""
    return [f.name for f in schema if not pa.types.is_struct(f.type) and not pa.types.is_list(f.type)]


def zstd_everything(features: Features, schema: pa.Schema) -> dict[str, Any]:
    """Up to 2026-11-30: zstd over every column, PNG bytes included; no dictionary, no page index."""
    return {"compression": "zstd", "use_dictionary": False, "write_statistics": _statistics(schema)}


def datasets_defaults(features: Features, schema: pa.Schema) -> dict[str, Any]:
    """What ``datasets`` writes for the Hub: its per-column options, a page index, content-defined chunks."""
    from datasets import config
    from datasets.arrow_writer import get_parquet_column_options

    return {
        **get_parquet_column_options(features, schema),
        "write_page_index": True,
        "use_content_defined_chunking": config.DEFAULT_CDC_OPTIONS,
    }


def zstd_paged(features: Features, schema: pa.Schema) -> dict[str, Any]:
    """zstd everywhere, a page index, and dictionaries except for image bytes (never repeated).

    zstd still earns its place on PNG bytes: at 28 px the PNG headers and small IDAT streams
    compress by 8-10%. Dictionaries shrink volumes (uint8 voxels) by a quarter; the page index
    lets the viewer read only the pages of the rows it shows (libviewer prunes pages).
    """
    from datasets.arrow_writer import get_parquet_column_options

    plain = get_parquet_column_options(features, schema)  # image leaves: PLAIN; others: dictionary
    return {
        "compression": "zstd",
        "use_dictionary": plain["use_dictionary"],
        "column_encoding": plain["column_encoding"],
        "write_statistics": _statistics(schema),
        "write_page_index": True,
    }


def zstd_paged_cdc(features: Features, schema: pa.Schema) -> dict[str, Any]:
    """As ``zstd_paged``, with datasets' content-defined chunking (pages cut where the content says)."""
    from datasets import config

    return {**zstd_paged(features, schema), "use_content_defined_chunking": config.DEFAULT_CDC_OPTIONS}


VARIANTS: dict[str, Callable[[Features, pa.Schema], dict[str, Any]]] = {
    "zstd_everything": zstd_everything,
    "datasets_defaults": datasets_defaults,
    "zstd_paged": zstd_paged,
    "zstd_paged_cdc": zstd_paged_cdc,
}
CHOSEN = "zstd_paged"  # BENCHMARKS.md, "Parquet layout": fewest bytes on every input, a page index for the viewer


def writer_options(features: Features, schema: pa.Schema) -> dict[str, Any]:
    """Keyword arguments for ``pq.ParquetWriter`` of one shard of a config with these features."""
    return VARIANTS[CHOSEN](features, schema)
