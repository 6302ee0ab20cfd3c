"""MedMNIST as a Hugging Face dataset: what a user of `hfmed build medmnist` relies on."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import REAL_MEDMNIST, SMALL, first_row, make_medmnist_npz, medmnist_arrays, write_npz
from datasets import Array3D, ClassLabel, Image, List, load_dataset
from hfmed.loading_scripts.medmnist import MedMNIST, sizes

from hfmed import facts
from hfmed.cli import main
from hfmed.verify import VerifyFailed, verify
from hfmed.writer import ROW_GROUP_RAW_BYTES, build_config, plan_shards

SUBSETS = facts.load("medmnist")["subsets"]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*args: str) -> int:
    return main(list(args))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("hfmed: error:")]
    assert len(errors) == 1, err
    return errors[0]


# --- the registry -------------------------------------------------------------------------------


def test_registry_holds_all_18_subsets_with_their_official_sizes():
    assert len(SUBSETS) == 18
    volumetric = [f for f, s in SUBSETS.items() if s["volumetric"]]
    assert len(volumetric) == 6
    for flag, s in SUBSETS.items():
        assert sizes(flag) == ([28, 64] if s["volumetric"] else [28, 64, 128, 224])
        assert s["task"] in {"binary", "multi-class", "ordinal", "multi-label"}
        assert s["license"] in {"cc-by-4.0", "cc-by-nc-4.0"}
        assert set(s["splits"]) == {"train", "validation", "test"}
        assert all(len(m) == 32 for m in s["md5"].values())
        assert s["channels"] in (1, 3)
    assert SUBSETS["dermamnist"]["license"] == "cc-by-nc-4.0"
    assert SUBSETS["chestmnist"]["task"] == "multi-label" and len(SUBSETS["chestmnist"]["labels"]) == 14
    assert SUBSETS["retinamnist"]["task"] == "ordinal"
    assert SUBSETS["breastmnist"]["md5"][28] == "750601b1f35ba3300ea97c75c52ff8f6"
    assert "866b832ed4eeba67bfb9edee1d5544e6" in SUBSETS["organamnist"]["superseded_md5"][28]


def test_list_shows_every_subset_at_every_size(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out.splitlines()
    rows = out[1:]
    assert len(rows) == 12 * 4 + 6 * 2
    assert any(r.startswith("pneumoniamnist_224 ") and "binary" in r and "4708/524/624" in r for r in rows)
    assert any(r.startswith("adrenalmnist3d_64 ") and "28" not in r.split()[4] for r in rows)


# --- real files ---------------------------------------------------------------------------------


def test_real_breastmnist_builds_loads_and_verifies(built_medmnist, real_breastmnist):
    ds = load_dataset(str(built_medmnist), "breastmnist")
    assert {k: len(v) for k, v in ds.items()} == {"train": 546, "validation": 78, "test": 156}
    feats = ds["train"].features
    assert isinstance(feats["image"], Image) and feats["label"].names == ["malignant", "normal, benign"]
    source = np.load(real_breastmnist)
    assert np.array_equal(np.asarray(ds["test"][5]["image"]), source["test_images"][5])
    assert ds["test"][5]["label"] == int(source["test_labels"][5, 0])
    streamed = load_dataset(str(built_medmnist), "breastmnist", streaming=True)
    first = first_row(streamed["train"])
    assert np.array_equal(np.asarray(first["image"]), source["train_images"][0])
    assert [r.rows for r in verify(built_medmnist, "breastmnist", real_breastmnist)] == [546, 78, 156]


def test_real_adrenalmnist3d_has_volume_label_and_preview(built_medmnist, real_adrenalmnist3d):
    ds = load_dataset(str(built_medmnist), "adrenalmnist3d")
    feats = ds["train"].features
    assert isinstance(feats["volume"], Array3D) and feats["volume"].shape == (28, 28, 28)
    assert feats["label"].names == ["normal", "hyperplasia"] and isinstance(feats["preview"], Image)
    source = np.load(real_adrenalmnist3d)
    row = ds["validation"][3]
    assert np.array_equal(np.asarray(row["volume"], dtype=np.uint8), source["val_images"][3])
    v = source["val_images"][3]
    expected_preview = np.concatenate([v[14], v[:, 14, :], v[:, :, 14]], axis=1)
    assert np.array_equal(np.asarray(row["preview"]), expected_preview)
    streamed = first_row(load_dataset(str(built_medmnist), "adrenalmnist3d", streaming=True)["test"])
    assert np.array_equal(np.asarray(streamed["volume"], dtype=np.uint8), source["test_images"][0])
    assert sum(r.rows for r in verify(built_medmnist, "adrenalmnist3d", real_adrenalmnist3d)) == 1584


def test_load_dataset_by_folder_name_from_its_parent(built_medmnist, monkeypatch):
    monkeypatch.chdir(built_medmnist.parent)
    ds = load_dataset("medmnist", "breastmnist", streaming=True)
    assert first_row(ds["validation"])["label"] in (0, 1)


def test_card_declares_every_built_config(built_medmnist):
    text = (built_medmnist / "README.md").read_text()
    from huggingface_hub import DatasetCard

    data = DatasetCard(text).data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["adrenalmnist3d", "breastmnist"]
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert [s["num_examples"] for s in infos["breastmnist"]["splits"]] == [546, 78, 156]
    assert {f["name"] for f in infos["adrenalmnist3d"]["features"]} == {"volume", "label", "preview"}
    assert not list(built_medmnist.rglob("*.py"))


def test_download_from_a_mirror_is_md5_checked_and_cached(tmp_path, monkeypatch, real_breastmnist):
    serve = tmp_path / "mirror"
    serve.mkdir()
    shutil.copy(real_breastmnist, serve / "breastmnist.npz")
    with _http_server(serve) as base:
        monkeypatch.setenv("HFMED_MEDMNIST_URL", base + "/{file}")
        monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
        assert run_cli("build", "medmnist", "breastmnist", "--out", str(tmp_path / "out"), "--quiet") == 0
    cached = tmp_path / "cache" / "medmnist" / "breastmnist.npz"
    assert hashlib.md5(cached.read_bytes()).hexdigest() == "750601b1f35ba3300ea97c75c52ff8f6"
    # Verify finds the cached file on its own, with no network (the server is gone).
    assert [r.rows for r in verify(tmp_path / "out", "breastmnist")] == [546, 78, 156]


def test_md5_mismatch_on_download_is_refused(tmp_path, monkeypatch, capsys):
    serve = tmp_path / "mirror"
    serve.mkdir()
    make_medmnist_npz(serve, "breastmnist")  # right structure, not the official bytes
    with _http_server(serve) as base:
        monkeypatch.setenv("HFMED_MEDMNIST_URL", base + "/{file}")
        monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
        assert run_cli("build", "medmnist", "breastmnist", "--out", str(tmp_path / "out"), "--quiet") == 2
    assert "md5" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").rglob("*.npz"))


class _http_server:
    def __init__(self, folder: Path):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.RequestHandlerClass.log_message = lambda *a: None

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# --- every subset, on generated files ---------------------------------------------------------


@pytest.mark.parametrize("flag", sorted(SUBSETS))
def test_every_subset_builds_with_the_designed_features(flag, small_npz, tmp_path):
    path = small_npz(flag)
    out = tmp_path / "medmnist"
    build_config(MedMNIST(flag, path, unofficial=True), out, progress=False)
    ds = load_dataset(str(out), flag, streaming=True)
    feats = ds["train"].features
    s = SUBSETS[flag]
    source = np.load(path)
    row = first_row(ds["test"])
    if s["volumetric"]:
        assert set(feats) == {"volume", "label", "preview"}
        assert np.array_equal(np.asarray(row["volume"], dtype=np.uint8), source["test_images"][0])
    elif s["task"] == "multi-label":
        assert set(feats) == {"image", "labels"}
        assert isinstance(feats["labels"], List) and isinstance(feats["labels"].feature, ClassLabel)
        assert row["labels"] == list(np.flatnonzero(source["test_labels"][0]))
    else:
        assert set(feats) == {"image", "label"}
        assert row["label"] == int(source["test_labels"][0, 0])
        img = row["image"]
        assert img.mode == ("RGB" if s["channels"] == 3 else "L")
        assert np.array_equal(np.asarray(img), source["test_images"][0])
    names = feats["labels"].feature.names if "labels" in feats else feats["label"].names
    assert names == s["labels"]
    verify(out, flag, path)


@pytest.mark.parametrize("flag,size", [("pathmnist", 64), ("chestmnist", 128), ("organmnist3d", 64)])
def test_larger_sizes_get_their_own_config(flag, size, small_npz, tmp_path):
    path = small_npz(flag, size, {"train": 4, "val": 2, "test": 3})
    assert path.name == f"{flag}_{size}.npz"
    out = tmp_path / "medmnist"
    assert (
        run_cli(
            "build",
            "medmnist",
            flag,
            "--size",
            str(size),
            "--source",
            str(path),
            "--out",
            str(out),
            "--unofficial",
            "--quiet",
        )
        == 0
    )
    ds = load_dataset(str(out), f"{flag}_{size}")
    key = "volume" if SUBSETS[flag]["volumetric"] else "image"
    assert np.asarray(ds["train"][0][key]).shape[:2] == (size, size)
    verify(out, f"{flag}_{size}", path)


def test_chestmnist_labels_are_the_positive_findings_and_empty_means_none(tmp_path):
    arrays = medmnist_arrays("chestmnist", n={"train": 3, "val": 1, "test": 1})
    arrays["train_labels"][:] = 0
    arrays["train_labels"][1, [2, 13]] = 1
    path = write_npz(tmp_path / "chestmnist.npz", arrays)
    out = tmp_path / "medmnist"
    build_config(MedMNIST("chestmnist", path, unofficial=True), out, progress=False)
    ds = load_dataset(str(out), "chestmnist")
    assert ds["train"]["labels"] == [[], [2, 13], []]
    assert ds["train"].features["labels"].feature.int2str(13) == "hernia"


# --- layout, determinism, atomicity -------------------------------------------------------------


def test_two_builds_of_the_same_source_are_byte_identical(small_npz, tmp_path):
    path = small_npz("bloodmnist")
    for out in ("a", "b"):
        build_config(MedMNIST("bloodmnist", path, unofficial=True), tmp_path / out, progress=False)
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a == b and "README.md" in a and "bloodmnist/train-00000-of-00001.parquet" in a


def test_building_another_config_keeps_the_others(small_npz, tmp_path):
    out = tmp_path / "medmnist"
    assert (
        run_cli(
            "build",
            "medmnist",
            "retinamnist",
            "--source",
            str(small_npz("retinamnist")),
            "--out",
            str(out),
            "--unofficial",
            "--quiet",
        )
        == 0
    )
    before = tree_bytes(out / "retinamnist")
    assert (
        run_cli(
            "build",
            "medmnist",
            "dermamnist",
            "--source",
            str(small_npz("dermamnist")),
            "--out",
            str(out),
            "--unofficial",
            "--quiet",
        )
        == 0
    )
    assert tree_bytes(out / "retinamnist") == before
    for config in ("retinamnist", "dermamnist"):
        assert len(load_dataset(str(out), config)["train"]) == SMALL["train"]


def test_large_splits_get_several_shards_with_small_row_groups():
    per_row = 224 * 224 * 3
    plan = plan_shards(89_996, per_row)
    assert plan.num_shards > 8
    assert plan.rows_per_group * per_row <= ROW_GROUP_RAW_BYTES < 100 << 20
    assert plan.rows_per_shard % plan.rows_per_group == 0
    assert plan_shards(165_466, 28 * 28).num_shards >= 8  # tissuemnist at 28 px: enough for 8 workers
    assert plan_shards(546, 28 * 28).num_shards == 1


def test_shards_are_named_and_sized_as_planned(small_npz, tmp_path, monkeypatch):
    import hfmed.writer as writer

    monkeypatch.setattr(writer, "SHARD_MAX_ROWS", 4)
    monkeypatch.setattr(writer, "ROW_GROUP_MAX_ROWS", 2)
    path = small_npz("octmnist")
    out = tmp_path / "medmnist"
    build_config(MedMNIST("octmnist", path, unofficial=True), out, progress=False)
    names = sorted(p.name for p in (out / "octmnist").iterdir())
    assert names[:2] == ["test-00000-of-00002.parquet", "test-00001-of-00002.parquet"]
    assert [n for n in names if n.startswith("train")] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    md = pq.read_metadata(out / "octmnist" / "train-00000-of-00003.parquet")
    assert md.num_rows == 4 and md.num_row_groups == 2
    verify(out, "octmnist", path)


def test_existing_config_needs_overwrite(small_npz, tmp_path, capsys):
    path = small_npz("pneumoniamnist")
    out = tmp_path / "medmnist"
    args = ["build", "medmnist", "pneumoniamnist", "--source", str(path), "--out", str(out), "--unofficial", "--quiet"]
    assert run_cli(*args) == 0
    before = tree_bytes(out)
    assert run_cli(*args) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert tree_bytes(out) == before
    other = small_npz("pneumoniamnist", seed=1)
    assert run_cli(*args[:4], str(other), *args[5:], "--overwrite") == 0
    verify(out, "pneumoniamnist", other)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_all_builds_the_whole_collection_and_resumes_after_a_failure(tmp_path, capsys):
    sources = tmp_path / "sources"
    sources.mkdir()
    for flag in SUBSETS:
        make_medmnist_npz(sources, flag, n={"train": 3, "val": 2, "test": 2})
    (sources / "octmnist.npz").write_bytes(b"not a zip")  # --all stops at this one
    out = tmp_path / "medmnist"
    args = [
        "build",
        "medmnist",
        "--all",
        "--size",
        "28",
        "--source",
        str(sources),
        "--out",
        str(out),
        "--unofficial",
        "--quiet",
    ]
    assert run_cli(*args) == 2
    assert "octmnist.npz" in one_error_line(capsys)
    done = sorted(p.parent.name for p in out.glob("*/train-*.parquet"))
    assert done and "octmnist" not in done
    before = {c: tree_bytes(out / c) for c in done}
    make_medmnist_npz(sources, "octmnist", n={"train": 3, "val": 2, "test": 2})
    assert run_cli(*args) == 0
    assert f"{len(SUBSETS) - len(done)} config(s) built, {len(done)} already complete" in capsys.readouterr().out
    assert sorted(p.parent.name for p in out.glob("*/train-*.parquet")) == sorted(SUBSETS)
    assert {c: tree_bytes(out / c) for c in done} == before
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(out / "README.md").data.to_dict()
    assert len(card["configs"]) == 18
    assert [c["config_name"] for c in card["configs"] if c.get("default")] == ["pneumoniamnist"]


def test_a_build_killed_midway_leaves_no_config_and_a_rerun_completes(small_npz, tmp_path):
    path = small_npz("organcmnist")
    out = tmp_path / "medmnist"
    script = f"""
import os, pyarrow.parquet as pq
from hfmed.writer import build_config
from hfmed.loading_scripts.medmnist import MedMNIST
closes = 0
real_close = pq.ParquetWriter.close
def close(self):
    global closes
    real_close(self)
    closes += 1
    if closes == 2:
        os._exit(9)  # as abrupt as a kill: no cleanup runs
pq.ParquetWriter.close = close
build_config(MedMNIST("organcmnist", {str(path)!r}, unofficial=True), {str(out)!r}, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path)
    assert proc.returncode == 9
    assert not (out / "organcmnist").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".hfmed-tmp-")]
    assert (
        run_cli("build", "medmnist", "organcmnist", "--source", str(path), "--out", str(out), "--unofficial", "--quiet")
        == 0
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "README.md").exists()
    verify(out, "organcmnist", path)


def test_verify_names_the_first_differing_row(small_npz, tmp_path, capsys):
    path = small_npz("pneumoniamnist")
    out = tmp_path / "medmnist"
    build_config(MedMNIST("pneumoniamnist", path, unofficial=True), out, progress=False)
    shard = out / "pneumoniamnist" / "validation-00000-of-00001.parquet"
    table = pq.read_table(shard)
    labels = table.column("label").to_pylist()
    labels[3] = 1 - labels[3]
    import pyarrow as pa

    table = table.set_column(
        table.schema.get_field_index("label"), table.schema.field("label"), pa.array(labels, pa.int64())
    )
    pq.write_table(table, shard)
    with pytest.raises(VerifyFailed, match="validation row 3: column 'label'"):
        verify(out, "pneumoniamnist", path)
    assert run_cli("verify", str(out), "--config", "pneumoniamnist", "--source", str(path)) == 1
    assert "validation row 3" in capsys.readouterr().err


def test_a_resaved_file_is_accepted_with_a_warning(tmp_path, capsys):
    path = make_medmnist_npz(tmp_path, "breastmnist")  # official structure and sizes, other bytes
    assert (
        run_cli("build", "medmnist", "breastmnist", "--source", str(path), "--out", str(tmp_path / "o"), "--quiet") == 0
    )
    err = capsys.readouterr().err
    assert "hfmed: warning:" in err and "is not an official breastmnist.npz" in err


def test_the_installed_console_script_builds_from_any_folder(tmp_path, real_breastmnist):
    hfmed = Path(sys.executable).parent / "hfmed"
    proc = subprocess.run(
        [str(hfmed), "build", "medmnist", "breastmnist", "--source", str(real_breastmnist), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "medmnist" / "breastmnist" / "train-00000-of-00001.parquet").exists()


# --- bad input: one line, exit code 2, nothing half-written ------------------------------------


def _bad(tmp_path, name: str, members: dict[str, np.ndarray]) -> Path:
    return write_npz(tmp_path / name, members)


def _expect_refusal(capsys, tmp_path, source: Path, *extra: str, config: str = "breastmnist") -> str:
    out = tmp_path / "out"
    assert run_cli("build", "medmnist", config, "--source", str(source), "--out", str(out), "--quiet", *extra) == 2
    line = one_error_line(capsys)
    assert not out.exists() or not [p for p in out.iterdir()], "a refused build must leave nothing behind"
    return line


def test_missing_file(tmp_path, capsys):
    line = _expect_refusal(capsys, tmp_path, tmp_path / "nope.npz")
    assert "nope.npz" in line and "no such file" in line


def test_not_a_zip(tmp_path, capsys):
    (tmp_path / "x.npz").write_text("hello")
    assert "not a zip" in _expect_refusal(capsys, tmp_path, tmp_path / "x.npz")


def test_truncated_archive(tmp_path, capsys):
    full = (REAL_MEDMNIST / "breastmnist.npz").read_bytes()
    cut = tmp_path / "breastmnist.npz"
    cut.write_bytes(full[: len(full) // 2])
    assert "truncated" in _expect_refusal(capsys, tmp_path, cut)


def test_damaged_member_data(tmp_path, capsys):
    arrays = medmnist_arrays("breastmnist")
    path = write_npz(tmp_path / "breastmnist.npz", arrays)
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("test_images.npy")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    line = _expect_refusal(capsys, tmp_path, path)
    assert "test_images" in line and "damaged" in line


def test_missing_key(tmp_path, capsys):
    arrays = medmnist_arrays("breastmnist")
    del arrays["val_labels"]
    line = _expect_refusal(capsys, tmp_path, _bad(tmp_path, "breastmnist.npz", arrays))
    assert "'val_labels' is missing" in line


def test_images_of_the_wrong_size_name_the_right_option(tmp_path, capsys):
    path = make_medmnist_npz(tmp_path, "breastmnist", 64, n={"train": 546, "val": 78, "test": 156})
    line = _expect_refusal(capsys, tmp_path, path)
    assert "(64, 64)" in line and "--size 64" in line


def test_object_arrays_are_refused_without_unpickling(tmp_path, capsys):
    arrays = medmnist_arrays("breastmnist")
    arrays["train_labels"] = np.array([[1]] * 546, dtype=object)
    path = tmp_path / "breastmnist.npz"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in arrays.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, v, allow_pickle=True)
    line = _expect_refusal(capsys, tmp_path, path)
    assert "train_labels" in line and "objects" in line


def test_labels_out_of_range(tmp_path, capsys):
    arrays = medmnist_arrays("breastmnist")
    arrays["test_labels"][7] = 2
    line = _expect_refusal(capsys, tmp_path, _bad(tmp_path, "breastmnist.npz", arrays))
    assert "test_labels" in line and "holds 2" in line


def test_split_sizes_that_differ_from_the_official_file_need_unofficial(tmp_path, capsys):
    path = make_medmnist_npz(tmp_path, "breastmnist", n={"train": 5, "val": 2, "test": 2})
    line = _expect_refusal(capsys, tmp_path, path)
    assert "546" in line and "--unofficial" in line


def test_unknown_config_and_size(tmp_path, capsys):
    assert run_cli("build", "medmnist", "adrenalmnist3d", "--size", "224", "--out", str(tmp_path / "o")) == 2
    assert "adrenalmnist3d_64" in one_error_line(capsys)
    assert run_cli("build", "medmnist", "nosuchmnist", "--out", str(tmp_path / "o")) == 2
    assert "hfmed list" in one_error_line(capsys)


def test_a_users_source_file_is_never_modified(tmp_path, real_breastmnist):
    before = hashlib.md5(real_breastmnist.read_bytes()).hexdigest()
    build_config(MedMNIST("breastmnist", real_breastmnist), tmp_path / "o", progress=False)
    assert hashlib.md5(real_breastmnist.read_bytes()).hexdigest() == before
