"""MedIMeta: every dataset folder in the official layout becomes typed, lossless, verifiable configs.

No real MedIMeta images exist offline, so each of the 19 real info.yaml files in
../shared/data/medimeta_info/ drives a small synthetic folder in exactly the official layout
(tests/medimeta_fixtures.py). The 19 are generated and built once per module.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import MEDIMETA_INFO, first_row
from datasets import ClassLabel, Features, Image, List, Value, load_dataset
from medimeta_fixtures import make_medimeta_folder, proportional

from hfmed import facts
from hfmed.cli import main
from hfmed.features import read_metadata
from hfmed.sources import medimeta as source
from hfmed.sources.medimeta import parse_info, read_runs, snake_case, summarize
from hfmed.verify import verify

INFO_FILES = sorted(MEDIMETA_INFO.glob("*.yaml"))
IDS = [p.stem for p in INFO_FILES]
SPLIT_STEMS = {"train": "train", "validation": "val", "test": "test"}


def real_info(ds_id: str) -> dict:
    return yaml.safe_load((MEDIMETA_INFO / f"{ds_id}.yaml").read_text(encoding="utf-8"))


def column_of(task_name: str) -> str:
    """snake_case as the 19 real task names need it (lower case, runs of other characters -> _)."""
    return re.sub(r"[^a-z0-9]+", "_", task_name.lower()).strip("_")


def expected_features(info: dict, patient_id: bool = True) -> Features:
    """The features the issue specifies, written out from the raw info.yaml."""
    cols = {"image": Image()}
    for t in info["tasks"]:
        label = ClassLabel(names=[" ".join(str(t["labels"][k]).split()) for k in sorted(t["labels"])])
        cols[column_of(t["task_name"])] = List(label) if t["task_target"] == "MULTILABEL_CLASSIFICATION" else label
    if patient_id:
        cols["patient_id"] = Value("string")
    return Features(cols)


def split_indices(folder: Path, kind: str, split: str) -> list[int]:
    path = folder / kind / f"{SPLIT_STEMS[split]}.txt"
    if not path.exists():
        return []
    return [int(line[len("images/") : -len(".tiff")]) for line in path.read_text().split("\n")]


def source_pixels(folder: Path, index: int) -> np.ndarray:
    with h5py.File(folder / "images.hdf5", "r") as f:
        return np.asarray(f["images"][index]).squeeze()


def run_cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def originals_differ(ds_id: str) -> bool:
    d = facts.load("medimeta")["datasets"][ds_id]
    return d["original_splits"] != d["splits"]


# --- the 19 real info files -------------------------------------------------------------------
@pytest.fixture(scope="module")
def built19(tmp_path_factory):
    """Synthetic folders for all 19 datasets, built with `hfmed build medimeta --all`."""
    root = tmp_path_factory.mktemp("medimeta19")
    src, out = root / "medimeta", root / "built"
    for seed, path in enumerate(INFO_FILES):
        make_medimeta_folder(src, path, seed=seed, tiff=False)
    assert main(["build", "medimeta", "--all", "--source", str(src), "--out", str(out), "--quiet"]) == 0
    return src, out


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def test_the_facts_table_is_the_summary_of_every_real_info_file():
    table = facts.load("medimeta")["datasets"]
    assert sorted(table) == IDS and len(IDS) == 19
    for path in INFO_FILES:
        assert table[path.stem] == summarize(parse_info(path)), path.stem


def test_counts_written_with_underscores_are_read_as_integers():
    info = parse_info(MEDIMETA_INFO / "cxr.yaml")
    assert info.total == 112_120 and info.splits == {"train": 73_421, "validation": 13_103, "test": 25_596}
    assert info.original_splits == {"train": 86_524, "validation": 0, "test": 25_596}


def test_task_columns_are_snake_case_of_the_task_names():
    assert snake_case("DR level") == "dr_level"
    assert snake_case("Regression Structures grouped") == "regression_structures_grouped"
    assert snake_case("calcType") == "calc_type"
    assert snake_case("2nd opinion") == "task_2nd_opinion"
    assert snake_case("???") == "task"


def test_list_shows_every_dataset_with_task_types_splits_and_license(capsys):
    assert main(["list", "medimeta"]) == 0
    text = capsys.readouterr().out
    for ds_id in IDS:
        assert re.search(rf"^{ds_id}\s", text, re.M), ds_id
    assert re.search(
        r"^cxr\s.*disease_labels\s+multi-label\s+14\s+73421/13103/25596\s+86524/0/25596\s+cc-by-sa-4.0", text, re.M
    )
    assert re.search(r"artifact\s+ordinal\s+6", text)
    assert re.search(r"^organs_axial\s.*cc-by-nc-sa-4.0", text, re.M)


def test_all_builds_each_dataset_and_an_original_config_where_the_splits_differ(built19):
    _, out = built19
    built = sorted(p.name for p in out.iterdir() if p.is_dir() and any(p.glob("*.parquet")))
    want = sorted(IDS + [f"{i}_original" for i in IDS if originals_differ(i)])
    assert built == want
    assert "derm_original" not in built and "cxr_original" in built


@pytest.mark.parametrize("ds_id", IDS)
def test_each_dataset_loads_typed_in_split_order_and_verifies(built19, hf_cache, ds_id):
    src, out = built19
    info = real_info(ds_id)
    want = expected_features(info)
    ds = load_dataset(str(out), ds_id, cache_dir=hf_cache)
    assert set(ds) == {"train", "validation", "test"}
    folder = src / ds_id
    mode = "L" if info["input_size"][0] == 1 else "RGB"
    for split, rows in ds.items():
        assert rows.features == want
        order = split_indices(folder, "splits", split)
        assert len(rows) == len(order)
        for row, index in zip(rows, order):
            assert row["image"].mode == mode and row["image"].size == (224, 224)
            assert np.array_equal(np.asarray(row["image"]), source_pixels(folder, index))
            for task in info["tasks"]:
                column = column_of(task["task_name"])
                raw = np.load(folder / "task_labels" / f"{task['task_name']}.npy")[index]
                keys = sorted(task["labels"])
                if task["task_target"] == "MULTILABEL_CLASSIFICATION":
                    assert row[column] == [j for j, v in enumerate(raw) if v], column
                else:  # the class name read back is the name info.yaml gives the source key
                    assert want[column].int2str(row[column]) == " ".join(str(task["labels"][int(raw)]).split())
                    assert keys[row[column]] == int(raw)
    streamed = load_dataset(str(out), ds_id, streaming=True)
    first = first_row(streamed["train"])
    assert streamed["train"].features == want
    assert first["image"].mode == mode
    assert [r.split for r in verify(out, ds_id, src)] == ["train", "validation", "test"]


def test_non_contiguous_keys_map_to_ids_in_key_order_and_the_mapping_is_in_the_shards(built19):
    _, out = built19
    _, meta = read_metadata(pq.read_schema(next((out / "dr_regular").glob("train-*.parquet"))))
    tasks = {t["column"]: t for t in meta["tasks"]}
    assert tasks["artifact"]["name"] == "Artifact" and tasks["artifact"]["type"] == "ordinal"
    assert tasks["artifact"]["keys"] == [0, 1, 4, 6, 8, 10]
    assert tasks["clarity"]["keys"] == [1, 4, 6, 8, 10]
    assert tasks["clarity"]["names"][0] == "Only Level 1 vascular arch can be identified"
    assert meta["dataset"]["license_id"] == "cc-by-sa-4.0" and meta["splits_from"] == "splits"
    assert meta["image_mode"] == "RGB"


def test_an_original_config_holds_the_original_splits_and_skips_empty_ones(built19, capsys):
    src, out = built19
    ds = load_dataset(str(out), "cxr_original", streaming=True)
    assert set(ds) == {"train", "test"}  # cxr has no original validation split
    rows = [r["patient_sex"] for r in ds["train"]]
    assert len(rows) == len(split_indices(src / "cxr", "original_splits", "train"))
    assert [r.split for r in verify(out, "cxr_original", src)] == ["train", "test"]
    rc, err = run_cli(capsys, "build", "medimeta", "derm_original", "--source", src, "--out", out.parent / "x")
    assert rc == 2 and "same images" in err and err.count("\n") == 1


def test_a_card_is_written_for_the_build(built19):
    _, out = built19
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "config_name: dr_regular_original" not in text  # dr_regular's original splits are its standard ones
    assert "config_name: cxr_original" in text and "config_name: skinl_photo" in text


# --- layouts ----------------------------------------------------------------------------------
def test_tiff_only_folder_builds_the_same_shards_as_hdf5(tmp_path):
    info = MEDIMETA_INFO / "pneumonia.yaml"
    a = make_medimeta_folder(tmp_path / "h5", info, seed=3, tiff=False)
    b = make_medimeta_folder(tmp_path / "tiff", info, seed=3, hdf5=False)
    assert not (b / "images.hdf5").exists() and (b / "images" / "000000.tiff").exists()
    for src in ("h5", "tiff"):
        assert (
            main(
                [
                    "build",
                    "medimeta",
                    "pneumonia",
                    "--source",
                    str(tmp_path / src),
                    "--out",
                    str(tmp_path / f"out_{src}"),
                    "--quiet",
                ]
            )
            == 0
        )
    shards = sorted(p.name for p in (tmp_path / "out_h5" / "pneumonia").iterdir())
    for name in shards:
        assert (tmp_path / "out_h5" / "pneumonia" / name).read_bytes() == (
            tmp_path / "out_tiff" / "pneumonia" / name
        ).read_bytes()
    assert [r.rows for r in verify(tmp_path / "out_tiff", "pneumonia", tmp_path / "tiff")] == [3, 2, 2]
    assert a.name == b.name == "pneumonia"


def test_greyscale_stored_with_a_channel_axis_reads_as_mode_l(tmp_path, capsys):
    folder = make_medimeta_folder(tmp_path / "src", MEDIMETA_INFO / "bus.yaml", tiff=False, hdf5_channel_axis=True)
    with h5py.File(folder / "images.hdf5") as f:
        assert f["images"].shape == (7, 224, 224, 1)
    # the dataset folder itself is accepted as --source too
    rc, err = run_cli(capsys, "build", "medimeta", "bus", "--source", folder, "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    row = first_row(load_dataset(str(tmp_path / "out"), "bus", streaming=True)["train"])
    assert row["image"].mode == "L"
    verify(tmp_path / "out", "bus", folder)


def test_rgb_split_in_several_shards_keeps_the_split_file_order(tmp_path, hf_cache, monkeypatch):
    import hfmed.writer as writer

    monkeypatch.setattr(writer, "SHARD_MAX_ROWS", 4)
    monkeypatch.setattr(writer, "ROW_GROUP_MAX_ROWS", 2)
    monkeypatch.setattr(source.folder, "WINDOW_BYTES", 3 * 224 * 224 * 3)  # three images per read window
    folder = make_medimeta_folder(tmp_path / "src", MEDIMETA_INFO / "derm.yaml", {"train": 11, "val": 2, "test": 3})
    order = split_indices(folder, "splits", "train")
    assert order != sorted(order)
    batches = list(source.MedIMetaFolder(folder).iter_batches(np.array(order)))
    assert [len(b["image"]) for b in batches] == [3, 3, 3, 2]
    assert (
        main(
            ["build", "medimeta", "derm", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--quiet"]
        )
        == 0
    )
    shards = sorted((tmp_path / "out" / "derm").glob("train-*.parquet"))
    assert [p.name for p in shards] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [pq.ParquetFile(p).metadata.num_row_groups for p in shards] == [2, 2, 2]
    ds = load_dataset(str(tmp_path / "out"), "derm", split="train", cache_dir=hf_cache)
    for row, index in zip(ds, order, strict=True):
        assert row["image"].mode == "RGB"
        assert np.array_equal(np.asarray(row["image"]), source_pixels(folder, index))
    assert [r.rows for r in verify(tmp_path / "out", "derm", tmp_path / "src")] == [11, 2, 3]


def test_reads_are_grouped_into_bounded_contiguous_runs():
    idx = np.array([3, 4, 5, 9, 40, 41, 42, 43, 44, 100])
    assert read_runs(idx, max_span=10, gap=4) == [(0, 4, 3, 10), (4, 9, 40, 45), (9, 10, 100, 101)]
    assert read_runs(np.arange(10), max_span=4) == [(0, 4, 0, 4), (4, 8, 4, 8), (8, 10, 8, 10)]
    assert read_runs(np.array([], dtype=np.int64), max_span=4) == []


def test_a_new_dataset_in_the_same_layout_builds_and_column_names_never_collide(tmp_path, capsys):
    info = (
        "id: newds\nname: A 20th dataset\ndomain: Test\n"
        "tasks:\n"
        "  - task_name: Image\n    task_target: BINARY_CLASSIFICATION\n    labels:\n      0: No\n      1: Yes\n"
        '  - task_name: "case category"\n    task_target: MULTICLASS_CLASSIFICATION\n  '
        "  labels:\n      2: same\n      5: same\n      9: other\n"
        "  - task_name: Case-Category\n    task_target: ORDINAL_REGRESSION\n    labels:\n      0: low\n      1: high\n"
        "  - task_name: tissueType\n    task_target: MULTILABEL_CLASSIFICATION\n    "
        "labels:\n      0: a\n      1: b\n      2: c\n"
        "input_size: [3, 224, 224]\n"
        "total_num_samples: 1_000\nsplits_num_samples:\n  train: 600\n  val: 200\n  test: 200\n"
        "original_splits_num_samples:\n  train: 800\n  val: 0\n  test: 200\n"
        'license: "Creative Commons Attribution 4.0 International (CC BY 4.0)"\n'
    )
    (tmp_path / "newds.yaml").write_text(info)
    folder = make_medimeta_folder(tmp_path / "src", tmp_path / "newds.yaml", patient_id=False)
    rc, err = run_cli(
        capsys, "build", "medimeta", "--all", "--source", tmp_path / "src", "--out", tmp_path / "out", "--quiet"
    )
    assert rc == 0, err
    ds = load_dataset(str(tmp_path / "out"), "newds", streaming=True)
    f = ds["train"].features
    assert list(f) == ["image", "image_2", "case_category", "case_category_2", "tissue_type"]  # no patient_id column
    assert f["image_2"].names == ["No", "Yes"]  # YAML 1.1 would have made these booleans
    assert f["case_category"].names == ["same (2)", "same (5)", "other"]
    assert isinstance(f["tissue_type"], List)
    keys = np.load(folder / "task_labels" / "case category.npy")
    ids = [r["case_category"] for r in ds["train"]]
    assert [[2, 5, 9][i] for i in ids] == [int(keys[i]) for i in split_indices(folder, "splits", "train")]
    assert (tmp_path / "out" / "newds_original").is_dir()
    assert [r.rows for r in verify(tmp_path / "out", "newds", tmp_path / "src")] == [3, 2, 2]


def test_multi_label_values_other_than_0_and_1_are_undeclared():
    task = parse_info(MEDIMETA_INFO / "cxr.yaml").tasks[0]
    assert task.multi_label and task.undeclared(np.array([[0, 1], [1, 0]])) is None
    assert task.undeclared(np.array([[0, 2], [1, 0]])) == 2


def test_proportional_split_of_synthetic_counts():
    assert proportional(7, [86_524, 0, 25_596]) == [5, 0, 2]
    assert proportional(3, [1, 1, 1]) == [1, 1, 1]


# --- bad input: one line, exit code 2, nothing written, the user's files untouched ---------------
def _rewrite_info(folder: Path, old: str, new: str) -> None:
    p = folder / "bus" / "info.yaml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))


def _save_labels(folder: Path, task: str, array: np.ndarray) -> None:
    np.save(folder / "bus" / "task_labels" / f"{task}.npy", array)


def _swap_split_line(folder: Path, stem: str, line: str) -> None:
    p = folder / "bus" / "splits" / f"{stem}.txt"
    lines = p.read_text().split("\n")
    lines[0] = line
    p.write_text("\n".join(lines))


def _rewrite_images(folder: Path, shape: tuple[int, ...], dtype=np.uint8) -> None:
    p = folder / "bus" / "images.hdf5"
    p.unlink()
    with h5py.File(p, "w") as f:
        f.create_dataset("images", data=np.zeros(shape, dtype=dtype))


def _bad_tiff(folder: Path) -> None:
    (folder / "bus" / "images.hdf5").unlink()
    from PIL import Image as PILImage

    PILImage.new("RGB", (224, 224)).save(folder / "bus" / "images" / "000005.tiff")


BAD = {
    "source folder missing": (lambda s: shutil.rmtree(s), "no such folder"),
    "dataset folder missing": (lambda s: (s / "bus").rename(s / "other"), "no MedIMeta dataset folder 'bus'"),
    "info.yaml missing": (lambda s: (s / "bus" / "info.yaml").unlink(), "info.yaml: missing"),
    "info.yaml malformed": (
        lambda s: (s / "bus" / "info.yaml").write_text("id: bus\ntasks: [\n  - {task_name: x\n"),
        "malformed YAML",
    ),
    "info.yaml of another schema": (
        lambda s: (s / "bus" / "info.yaml").write_text("flag: breastmnist\nsplits: {train: 546}\n"),
        "not a MedIMeta info.yaml",
    ),
    "info.yaml with an unknown task target": (
        lambda s: _rewrite_info(s, "BINARY_CLASSIFICATION", "SEGMENTATION"),
        "task_target 'SEGMENTATION'",
    ),
    "task name with a slash": (
        lambda s: _rewrite_info(s, "task_name: case category", "task_name: ../../case category"),
        "cannot name a file inside task_labels/",
    ),
    "task name with dots": (
        lambda s: _rewrite_info(s, "task_name: case category", 'task_name: ".."'),
        "cannot name a file inside task_labels/",
    ),
    "task without a labels file": (
        lambda s: (s / "bus" / "task_labels" / "malignancy.npy").unlink(),
        "malignancy.npy: missing",
    ),
    "labels shorter than the images": (
        lambda s: _save_labels(s, "malignancy", np.zeros(6, dtype=np.int64)),
        "has 6 labels for 7 images",
    ),
    "labels holding an undeclared key": (
        lambda s: _save_labels(s, "case category", np.array([0, 1, 2, 7, 0, 1, 2])),
        "holds label 7",
    ),
    "labels holding Python objects": (
        lambda s: np.save(
            s / "bus" / "task_labels" / "malignancy.npy", np.array([0, "x"] * 3 + [1], dtype=object), allow_pickle=True
        ),
        "not a plain numeric .npy",
    ),
    "split index out of range": (
        lambda s: _swap_split_line(s, "train", "images/000007.tiff"),
        "names image 7, but the dataset has images 0..6",
    ),
    "split line outside the layout": (
        lambda s: _swap_split_line(s, "val", "../../../etc/passwd"),
        "every line must read images/NNNNNN.tiff",
    ),
    "splits that overlap": (
        lambda s: _swap_split_line(s, "test", (s / "bus" / "splits" / "train.txt").read_text().split("\n")[0]),
        "in both train.txt and test.txt",
    ),
    "split file missing": (lambda s: (s / "bus" / "splits" / "test.txt").unlink(), "test.txt: missing"),
    "image array of the wrong shape": (lambda s: _rewrite_images(s, (7, 100, 100)), "has shape (7, 100, 100)"),
    "image array of the wrong type": (lambda s: _rewrite_images(s, (7, 224, 224), np.float32), "expected uint8 pixels"),
    "more images than info.yaml declares": (
        lambda s: _rewrite_images(s, (8, 224, 224)),
        "holds 8 images, info.yaml declares total_num_samples 7",
    ),
    "images.hdf5 not HDF5": (
        lambda s: (s / "bus" / "images.hdf5").write_bytes(b"not hdf5"),
        "not a readable HDF5 file",
    ),
    "no images at all": (
        lambda s: ((s / "bus" / "images.hdf5").unlink(), shutil.rmtree(s / "bus" / "images")),
        "holds neither images.hdf5 nor images/*.tiff",
    ),
    "a TIFF missing": (
        lambda s: ((s / "bus" / "images.hdf5").unlink(), (s / "bus" / "images" / "000003.tiff").unlink()),
        "000003.tiff: missing",
    ),
    "a TIFF of the wrong mode, found mid-build": (_bad_tiff, "000005.tiff: is a 224x224 RGB image"),
    "annotations without a row": (
        lambda s: (s / "bus" / "annotations.csv").write_text(
            "\n".join((s / "bus" / "annotations.csv").read_text().splitlines()[:-1]) + "\n"
        ),
        "has no row for images/",
    ),
    "info id differs from the folder": (
        lambda s: _rewrite_info(s, "id: bus", "id: busi"),
        "declares id 'busi' but its folder is 'bus'",
    ),
}


@pytest.fixture(scope="module")
def bus_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("bus_src")
    make_medimeta_folder(root, MEDIMETA_INFO / "bus.yaml", seed=5)
    return root


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(bus_source, tmp_path, capsys, case):
    src = tmp_path / "medimeta"
    shutil.copytree(bus_source, src)
    breaks, message = BAD[case]
    breaks(src)
    before = snapshot(src)
    out = tmp_path / "out"
    rc, err = run_cli(capsys, "build", "medimeta", "bus", "--source", src, "--out", out, "--quiet")
    assert rc == 2
    assert err.startswith("hfmed: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists() or list(out.iterdir()) == []
    assert snapshot(src) == before


def test_without_original_splits_only_the_standard_config_is_offered(bus_source, tmp_path, capsys):
    src = tmp_path / "medimeta"
    shutil.copytree(bus_source, src)
    shutil.rmtree(src / "bus" / "original_splits")
    rc, err = run_cli(capsys, "build", "medimeta", "bus_original", "--source", src, "--out", tmp_path / "out")
    assert rc == 2 and "original_splits: missing" in err
    rc, err = run_cli(capsys, "build", "medimeta", "--all", "--source", src, "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir() and p.name.startswith("bus")) == ["bus"]


def test_size_is_not_a_medimeta_option(bus_source, tmp_path, capsys):
    rc, err = run_cli(
        capsys, "build", "medimeta", "bus", "--size", "64", "--source", bus_source, "--out", tmp_path / "out"
    )
    assert rc == 2 and "--size applies to medmnist only" in err


def test_config_names_cannot_point_outside_the_source(bus_source, tmp_path, capsys):
    rc, err = run_cli(capsys, "build", "medimeta", "../bus", "--source", bus_source / "bus", "--out", tmp_path / "out")
    assert rc == 2 and "not a MedIMeta config name" in err


def test_a_source_is_required(tmp_path, capsys):
    rc, err = run_cli(capsys, "build", "medimeta", "bus", "--out", tmp_path / "out")
    assert rc == 2 and "pass --source" in err


@pytest.mark.parametrize("column", ["malignancy", "image"])
def test_verify_fails_on_a_tampered_shard(built19, tmp_path, capsys, column):
    src, out = built19
    copy = tmp_path / "built"
    shutil.copytree(out / "bus", copy / "bus")
    shard = next((copy / "bus").glob("train-*.parquet"))
    table = pq.read_table(shard)
    values = table.column(column).to_pylist()
    if column == "image":
        values[1], values[2] = values[2], values[1]
    else:
        values[1] = 1 - values[1]
    field = table.schema.field(column)
    table = table.set_column(table.schema.get_field_index(column), field, pa.array(values, type=field.type))
    pq.write_table(table, shard)
    rc, err = run_cli(capsys, "verify", copy, "--config", "bus", "--source", src)
    assert rc == 1 and f"train row 1: column '{column}' differs" in err
