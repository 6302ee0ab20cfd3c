"""`hfmed check` applies the Hub viewer's own rules (hfmed.viewer_rules): each test breaks one.

Errors are problems (exit 1, push refuses); what the viewer shows only partly is a warning.
The real adrenalmnist3d build is the natural case of a partly shown config; hand-made tiny
builds break the rules no hfmed build breaks (names, feature types).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Array3D, ClassLabel, Features, Image, Nifti

from hfmed import hub, viewer_rules
from hfmed.cli import main
from hfmed.features import encode_batch

ADRENAL_TRAIN = Path("adrenalmnist3d/train-00000-of-00001.parquet")


@pytest.fixture
def folder(tmp_path, built_medmnist) -> Path:
    out = tmp_path / "medmnist"
    shutil.copytree(built_medmnist, out)
    return out


def tiny_build(
    folder: Path, features: Features, table: pa.Table, config: str = "tiny", splits: tuple[str, ...] = ("train",)
) -> Path:
    """A dataset folder as the Hub reads one: a card declaring one config, one shard per split."""
    folder.mkdir()
    (folder / config).mkdir()
    for split in splits:
        pq.write_table(
            table.replace_schema_metadata(features.arrow_schema.metadata),
            folder / config / f"{split}-00000-of-00001.parquet",
        )
    meta = {
        "license": "cc-by-4.0",
        "configs": [
            {"config_name": config, "data_files": [{"split": s, "path": f"{config}/{s}-*.parquet"} for s in splits]}
        ],
        "dataset_info": [
            {
                "config_name": config,
                "features": features._to_yaml_list(),
                "splits": [{"name": s, "num_bytes": table.nbytes, "num_examples": len(table)} for s in splits],
            }
        ],
    }
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# tiny\n", encoding="utf-8")
    return folder


def image_table(n: int = 3) -> tuple[Features, pa.Table]:
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    images = np.arange(n * 8 * 8, dtype=np.uint8).reshape(n, 8, 8)
    return features, encode_batch(features, {"image": images, "label": np.arange(n) % 2})


def lines(found: list[str], fragment: str) -> list[str]:
    return [line for line in found if fragment in line]


# --- names -------------------------------------------------------------------------------------


def test_a_config_name_datasets_refuses_is_an_error(tmp_path):
    features, table = image_table()
    report = hub.check(tiny_build(tmp_path / "ds", features, table, config="ct:axial"), stream=False)
    assert lines(
        report.problems, "README.md: config name 'ct:axial' holds :; datasets refuses config names with any of"
    ), report.problems


def test_a_split_name_the_viewer_refuses_is_an_error(tmp_path):
    features, table = image_table()
    report = hub.check(tiny_build(tmp_path / "ds", features, table, splits=("train", "fold-1")), stream=False)
    assert lines(report.problems, "tiny/: split name 'fold-1' does not match"), report.problems


def test_more_splits_than_the_viewer_lists_is_an_error(folder, monkeypatch):
    monkeypatch.setattr(viewer_rules, "SPLIT_NAMES_MAX_NUMBER", 2)
    report = hub.check(folder, stream=False)
    assert sorted(lines(report.problems, "3 splits; the viewer refuses more than 2 per config")) == [
        "adrenalmnist3d/: 3 splits; the viewer refuses more than 2 per config",
        "breastmnist/: 3 splits; the viewer refuses more than 2 per config",
    ]


# --- features ----------------------------------------------------------------------------------


def test_a_feature_type_the_viewer_cannot_show_is_an_error(tmp_path):
    features = Features({"scan": Nifti(), "label": ClassLabel(names=["a", "b"])})
    table = pa.table(
        {
            "scan": pa.array([{"bytes": b"\x00" * 8, "path": None}], features.arrow_schema.field("scan").type),
            "label": pa.array([0]),
        }
    )
    report = hub.check(tiny_build(tmp_path / "ds", features, table), stream=False)
    assert report.problems == ["tiny/: column 'scan' is a Nifti, which the viewer cannot show; its first rows fail"]


def test_too_many_columns_and_too_long_names_are_errors(folder, monkeypatch):
    monkeypatch.setattr(viewer_rules, "FIRST_ROWS_COLUMNS_MAX_NUMBER", 2)
    monkeypatch.setattr(viewer_rules, "MAX_COLUMN_NAME_LENGTH", 6)
    found = hub.check(folder, stream=False).problems
    assert lines(found, "adrenalmnist3d/: 3 columns; the viewer shows at most 2"), found
    assert lines(found, "adrenalmnist3d/: column name 'preview'... is 7 characters; the viewer refuses names over 6"), (
        found
    )
    assert not lines(found, "breastmnist/: 2 columns"), found


def test_volumes_alone_are_shown_as_numbers_only():
    found = viewer_rules.feature_findings(
        "v", Features({"volume": Array3D((2, 2, 2), "uint8"), "label": ClassLabel(names=["a"])})
    )
    assert [(f.what.split(";")[0], f.error) for f in found] == [
        ("column(s) 'volume' are shown as lists of numbers and nothing else in the config is drawn", False)
    ]


def test_a_volume_before_its_preview_is_a_warning():
    features = Features({"volume": Array3D((2, 2, 2), "uint8"), "label": ClassLabel(names=["a"]), "preview": Image()})
    assert [f.what for f in viewer_rules.feature_findings("v", features)] == [
        "column 'volume' (numbers) comes before 'preview' (drawn); the viewer shows columns in this order"
    ]


def test_hfmed_3d_configs_put_what_a_person_looks_at_first(folder):
    from hfmed.features import read_metadata

    features, _ = read_metadata(pq.read_schema(folder / ADRENAL_TRAIN))
    assert list(features) == ["label", "preview", "volume"]
    assert viewer_rules.feature_findings("adrenalmnist3d", features) == []


def test_opening_on_a_3d_config_is_a_warning_that_names_a_2d_one(folder):
    card = folder / "README.md"
    text = card.read_text(encoding="utf-8").replace("  default: true\n", "")
    text = text.replace(
        "    path: adrenalmnist3d/test-*.parquet\n", "    path: adrenalmnist3d/test-*.parquet\n  default: true\n"
    )
    card.write_text(text, encoding="utf-8")
    report = hub.check(folder, stream=False)
    assert report.problems == []
    assert lines(report.warnings, "README.md:") == [
        "README.md: the viewer opens on 'adrenalmnist3d', whose volumes it shows only "
        "as cut lists of numbers; mark a 2D config such as 'breastmnist' `default: "
        "true`"
    ]


def test_hfmed_builds_open_on_a_2d_config(folder):
    assert not lines(hub.check(folder, stream=False).warnings, "README.md:")


# --- the first page and /rows ------------------------------------------------------------------


def test_a_28_voxel_config_shows_ten_rows_with_the_volume_cut(folder):
    """The viewer keeps 10 rows (its minimum) and cuts volume cells from the last row back until 200 kB."""
    report = hub.check(folder, stream=False)
    assert report.problems == []
    assert report.warnings == [
        "adrenalmnist3d/train,test: the first page holds 10 of 100 rows (the viewer's "
        "first rows are cut at 200,000 bytes of JSON); "
        "cells cut to 100 characters: 'volume' in 6 row(s)",
        "adrenalmnist3d/validation: the first page holds 10 of 98 rows (the viewer's "
        "first rows are cut at 200,000 bytes of JSON); "
        "cells cut to 100 characters: 'volume' in 6 row(s)",
    ]


def test_the_first_page_matches_the_viewers_arithmetic(folder):
    """Rows fit until the running JSON size reaches the limit; images are URLs and never cut."""
    from hfmed.features import read_metadata

    path = folder / "breastmnist" / "train-00000-of-00001.parquet"
    features, _ = read_metadata(pq.read_schema(path))
    head = pq.read_table(path).slice(0, 100)
    page = viewer_rules.first_rows(features, head, 546, dataset="o/d", config="breastmnist", split="train")
    assert (page.rows, page.wanted, page.cut) == (100, 100, {})
    row_item = len('{"row_idx":0,"row":{"image":{"src":"') + len(viewer_rules.ASSETS_BASE_URL)
    assert page.page_bytes > 100 * row_item


def test_a_list_of_images_is_sent_as_asset_urls_and_can_be_cut():
    """Nested images become asset URLs like top-level ones, but only top-level media are kept whole."""
    from datasets import List

    features = Features({"slices": List(Image())})
    png_bytes = (
        encode_batch(Features({"image": Image()}), {"image": np.zeros((4, 8, 8), np.uint8)}).column("image").to_pylist()
    )
    table = pa.table({"slices": [png_bytes] * 30}, schema=features.arrow_schema)
    sizes, cut = viewer_rules.cell_sizes(
        "slices", features["slices"], table.column("slices").combine_chunks(), "https://a/{row}/{column}/image.jpg"
    )
    element = '{"src":"https://a/0/slices/image-0000000.jpg","height":8,"width":8}'
    assert sizes[0] == len("[]") + 4 * len(element) + len(",,,")
    assert (
        cut[0] < sizes[0] and cut[0] > viewer_rules.FIRST_ROWS_MIN_CELL_BYTES
    )  # a JSON string of its first 100 bytes, quotes escaped


def test_a_first_page_over_what_a_worker_stores_is_an_error(folder, monkeypatch):
    monkeypatch.setattr(viewer_rules, "WORKER_CONTENT_MAX_BYTES", 150_000)
    found = hub.check(folder, stream=False).problems
    assert [
        line.split(":")[0]
        for line in lines(found, "even with every cell cut, over the 150,000 a worker may store: the first rows fail")
    ] == ["adrenalmnist3d/train,validation,test"], found


def test_a_large_rows_page_is_a_warning(folder, monkeypatch):
    monkeypatch.setattr(viewer_rules, "ROWS_PAGE_WARN_BYTES", 1_000_000)
    warned = lines(hub.check(folder, stream=False).warnings, "each later page of 100 rows (/rows, never cut) is about")
    assert [w.split(":")[0] for w in warned] == ["adrenalmnist3d/train,test", "adrenalmnist3d/validation"]


def test_a_larger_first_rows_limit_shows_more_rows(folder, monkeypatch):
    """The code's default (1,000,000 bytes) instead of the Hub's 200,000: about 21 rows of 28^3, none cut."""
    monkeypatch.setattr(viewer_rules, "FIRST_ROWS_MAX_BYTES", 1_000_000)
    warned = lines(hub.check(folder, stream=False).warnings, "adrenalmnist3d/train")
    assert len(warned) == 1 and "cells cut" not in warned[0]
    assert 15 <= int(warned[0].split("holds ")[1].split(" of")[0]) <= 25, warned


# --- row groups --------------------------------------------------------------------------------


def _one_row_group(path: Path, **options) -> None:
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=len(table), use_dictionary=False, **options)  # as hfmed writes


def test_a_row_group_the_viewer_cannot_read_whole_is_an_error(folder, monkeypatch):
    _one_row_group(folder / ADRENAL_TRAIN, compression="zstd")
    group = pq.read_metadata(folder / ADRENAL_TRAIN).row_group(0)
    compressed = sum(group.column(j).total_compressed_size for j in range(group.num_columns))
    monkeypatch.setattr(viewer_rules, "ROWS_INDEX_MAX_ARROW_DATA_IN_MEMORY", compressed // 2)
    found = hub.check(folder, stream=False).problems
    assert lines(
        found, f"{ADRENAL_TRAIN}: row group 0 holds {compressed / 1e6:.1f} MB compressed and the file has no page index"
    ), found


def test_a_page_index_lets_the_viewer_read_a_large_row_group(folder, monkeypatch):
    _one_row_group(folder / ADRENAL_TRAIN, compression="zstd", write_page_index=True)
    monkeypatch.setattr(viewer_rules, "ROWS_INDEX_MAX_ARROW_DATA_IN_MEMORY", 1000)
    assert not lines(hub.check(folder, stream=False).problems, str(ADRENAL_TRAIN))


def test_row_groups_over_what_datasets_writes_are_a_warning(folder):
    _one_row_group(
        folder / ADRENAL_TRAIN, compression="zstd"
    )  # 1,188 volumes: 109 MB as Arrow lists, 0.5 MB compressed
    report = hub.check(folder, stream=False)
    assert report.problems == []
    assert lines(report.warnings, "uncompressed") == [
        f"{ADRENAL_TRAIN}: row group 0 holds 109 MB uncompressed, over the 100 MB "
        "datasets writes at most (config.MAX_ROW_GROUP_SIZE); every streaming reader "
        "holds a whole row group"
    ]


def test_an_unreadable_shard_is_reported_once_and_check_does_not_crash(folder):
    (folder / ADRENAL_TRAIN).write_bytes(b"PAR1 not really")
    found = hub.check(folder, stream=False).problems
    assert [p.split(":")[0] for p in found] == [str(ADRENAL_TRAIN), "README.md"], (
        found
    )  # the file, then its missing rows
    assert "not a readable Parquet file" in found[0]


def test_shards_that_disagree_with_the_card_are_left_to_the_schema_check(folder):
    table = pq.read_table(folder / ADRENAL_TRAIN)
    pq.write_table(table.drop_columns(["preview"]), folder / ADRENAL_TRAIN)
    found = hub.check(folder, stream=False).problems
    assert found and all("preview" in p for p in found), found


# --- the command line --------------------------------------------------------------------------


def test_warnings_print_after_problems_and_keep_exit_0(folder, capsys):
    assert main(["check", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:-1]] == ["warning", "warning"]
    assert out[-1].startswith(f"{folder}: ready for the Hub: 2 config(s)")
