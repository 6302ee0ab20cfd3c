"""The Parquet layout of hfmed's shards (hfmed.parquet_options): what the Hub's viewer and readers rely on."""

from __future__ import annotations

import pyarrow.parquet as pq


def _columns(path):
    md = pq.read_metadata(path)
    return [md.row_group(g).column(j) for g in range(md.num_row_groups) for j in range(md.num_columns)]


def test_every_column_has_a_page_index_so_the_viewer_reads_only_the_pages_it_shows(built_medmnist):
    for path in sorted(built_medmnist.rglob("*.parquet")):
        assert all(c.has_offset_index for c in _columns(path)), path


def test_image_bytes_are_stored_plain_and_volumes_with_a_dictionary(built_medmnist):
    for c in _columns(built_medmnist / "breastmnist" / "train-00000-of-00001.parquet"):
        if c.path_in_schema == "image.bytes":
            assert not c.has_dictionary_page  # PNGs never repeat: a dictionary would only cost
            assert c.compression == "ZSTD"
    volume = [
        c
        for c in _columns(built_medmnist / "adrenalmnist3d" / "train-00000-of-00001.parquet")
        if c.path_in_schema.startswith("volume.")
    ]
    assert volume and all(c.has_dictionary_page and c.compression == "ZSTD" for c in volume)
