"""`hfmed check`: everything the Hub and its viewer need, found offline, one line per problem.

Each test breaks one thing in a copy of a real build and expects check to name it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hfmed import hub
from hfmed.cli import main

BREAST_TRAIN = Path("breastmnist/train-00000-of-00001.parquet")
BREAST_TEST = Path("breastmnist/test-00000-of-00001.parquet")


@pytest.fixture
def folder(tmp_path, built_medmnist) -> Path:
    """A private copy of the real breastmnist + adrenalmnist3d build, free to break."""
    out = tmp_path / "medmnist"
    shutil.copytree(built_medmnist, out)
    return out


def problems(folder: Path) -> list[str]:
    return hub.check(folder).problems


def only_problem(folder: Path, *fragments: str) -> str:
    found = problems(folder)
    assert len(found) == 1, found
    for fragment in fragments:
        assert fragment in found[0], found[0]
    return found[0]


def edit_card(folder: Path, old: str, new: str, count: int = 1) -> None:
    path = folder / "README.md"
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def rewrite_column(path: Path, column: str, make) -> None:
    """Rewrite one column of a shard, keeping its schema (and metadata) and row groups."""
    table = pq.read_table(path)
    i = table.schema.get_field_index(column)
    table = table.set_column(i, table.schema.field(i), make(table.column(column).combine_chunks()))
    pq.write_table(table, path)


# --- a clean build -----------------------------------------------------------------------------


def test_a_fresh_build_has_no_problems_and_check_says_so(folder, capsys):
    assert main(["check", str(folder)]) == 0
    *warnings, last = capsys.readouterr().out.strip().splitlines()
    assert "ready for the Hub: 2 config(s)" in last
    assert "checked offline" in last
    # the viewer shows a 28^3 volume cut short: a warning, not a problem (tests/test_viewer_rules.py)
    assert all(w.startswith("warning: adrenalmnist3d/") for w in warnings) and len(warnings) == 2


def test_the_report_lists_exactly_the_files_of_the_dataset(folder):
    (folder / ".hfmed-tmp-breastmnist-123").mkdir()
    (folder / ".hfmed-tmp-breastmnist-123" / "train-00000-of-00001.parquet").write_bytes(b"half written")
    report = hub.check(folder)
    assert report.problems == []
    shards = sorted(p.relative_to(folder) for p in folder.glob("*/*.parquet") if not p.parent.name.startswith("."))
    assert report.files == sorted(
        [Path("README.md"), *shards, Path("images/adrenalmnist3d.png"), Path("images/breastmnist.png")]
    )


# --- the card ----------------------------------------------------------------------------------


def test_a_missing_card(folder):
    (folder / "README.md").unlink()
    assert only_problem(folder, "README.md", "missing")


def test_yaml_that_does_not_parse(folder):
    edit_card(folder, "configs:\n", "configs: [\n")
    assert only_problem(folder, "README.md", "does not parse")


def test_configs_that_datasets_rejects(folder):
    edit_card(
        folder,
        "  - split: train\n    path: breastmnist/train-*.parquet",
        "  - split: train\n    paths: breastmnist/train-*.parquet",
    )
    found = problems(folder)
    assert any("`configs` is not valid" in p for p in found), found


def test_a_license_the_hub_does_not_know(folder):
    edit_card(folder, "license: cc-by-4.0", "license: creative-commons")
    assert only_problem(folder, "README.md", "'creative-commons' is not a Hub license id")


def test_an_unknown_size_category(folder):
    edit_card(folder, "- 1K<n<10K", "- thousands")
    assert only_problem(folder, "size_categories", "'thousands'")


def test_two_default_configs(folder):
    edit_card(
        folder,
        "    path: adrenalmnist3d/test-*.parquet\n",
        "    path: adrenalmnist3d/test-*.parquet\n  default: true\n",
    )
    found = problems(folder)
    assert any("several default configs" in p for p in found), found


def test_more_configs_than_the_hub_shows(folder, monkeypatch):
    monkeypatch.setattr(hub.readiness, "MAX_CONFIGS", 1)
    assert only_problem(folder, "declares 2 configs", "at most 1")


# --- data files --------------------------------------------------------------------------------


def test_a_glob_that_matches_nothing(folder):
    (folder / BREAST_TEST).unlink()
    found = problems(folder)
    assert any("'breastmnist' split 'test'" in p and "matches no file" in p for p in found), found


def test_a_stray_file_caught_by_a_glob(folder):
    shutil.copy(folder / BREAST_TRAIN, folder / "breastmnist" / "train-copy.parquet")
    found = problems(folder)
    assert any(
        p.startswith("breastmnist/train-copy.parquet:") and "not named train-NNNNN-of-MMMMM.parquet" in p for p in found
    ), found


def test_a_missing_shard_of_a_split(folder):
    (folder / BREAST_TRAIN).rename(folder / "breastmnist" / "train-00000-of-00002.parquet")
    found = problems(folder)
    assert any("lacks shard(s) 00001 of 00002" in p for p in found), found


def test_a_stray_file_outside_every_config(folder):
    (folder / "notes.txt").write_text("to do", encoding="utf-8")
    assert only_problem(folder, "notes.txt", "belongs to no config")


def test_a_shard_folder_the_card_does_not_declare(folder):
    shutil.copytree(folder / "breastmnist", folder / "breastmnist_64")
    found = problems(folder)
    assert len(found) == 3 and all(p.startswith("breastmnist_64/") and "belongs to no config" in p for p in found), (
        found
    )


def test_a_python_file(folder):
    (folder / "medmnist.py").write_text("import datasets\n", encoding="utf-8")
    assert only_problem(folder, "medmnist.py", "Python file")


def test_a_montage_the_card_links_but_the_folder_lacks(folder):
    (folder / "images" / "breastmnist.png").unlink()
    assert only_problem(folder, "links to images/breastmnist.png")


# --- shards ------------------------------------------------------------------------------------


def test_features_that_disagree_with_the_card(folder):
    edit_card(folder, "'1': normal, benign", "'1': benign")
    found = problems(folder)
    schema = [p for p in found if "schema disagrees" in p]
    assert len(schema) == 1 and schema[0].startswith(
        "breastmnist/: the shards' schema disagrees with the card's dataset_info: 'label'"
    ), found


def test_a_shard_whose_schema_differs_from_its_siblings(folder):
    table = pq.read_table(folder / BREAST_TEST)
    meta = dict(table.schema.metadata)
    meta[b"huggingface"] = meta[b"huggingface"].replace(b"normal, benign", b"benign")
    pq.write_table(table.replace_schema_metadata(meta), folder / BREAST_TEST)
    found = problems(folder)
    assert any(p.startswith(f"{BREAST_TEST}: schema differs from train-00000-of-00001.parquet") for p in found), found


def test_split_sizes_that_disagree_with_the_card(folder):
    edit_card(folder, "num_examples: 546", "num_examples: 547")
    assert only_problem(folder, "breastmnist/train has 547 rows, its shards hold 546")


def test_images_stored_as_paths_without_bytes(folder):
    def paths_only(images: pa.StructArray) -> pa.Array:
        n = len(images)
        return pa.StructArray.from_arrays(
            [pa.nulls(n, pa.binary()), pa.array([f"img/{i}.png" for i in range(n)])], fields=list(images.type)
        )

    rewrite_column(folder / BREAST_TRAIN, "image", paths_only)
    found = problems(folder)
    assert any(p.startswith(f"{BREAST_TRAIN}:") and "546 row(s) without image bytes" in p for p in found), found


# Row-group sizes, first pages and the other rules of the viewer itself: tests/test_viewer_rules.py.


def test_images_that_do_not_decode_fail_the_streaming_load(folder):
    def garbage(images: pa.StructArray) -> pa.Array:
        n = len(images)
        return pa.StructArray.from_arrays(
            [pa.array([b"not a png"] * n, pa.binary()), pa.nulls(n, pa.string())], fields=list(images.type)
        )

    rewrite_column(folder / BREAST_TRAIN, "image", garbage)
    found = problems(folder)
    assert len(found) == 2, found
    assert found[0].startswith("breastmnist/train: an image among the first 100 rows does not open with Pillow"), found
    assert "load_dataset(folder, 'breastmnist', streaming=True) fails" in found[1], found


# --- the command line --------------------------------------------------------------------------


def test_problems_print_one_line_each_and_exit_1(folder, capsys):
    (folder / "notes.txt").write_text("x", encoding="utf-8")
    (folder / "setup.py").write_text("x", encoding="utf-8")
    assert main(["check", str(folder)]) == 1
    captured = capsys.readouterr()
    assert [line for line in captured.out.strip().splitlines() if not line.startswith("warning: ")] == [
        "setup.py: a Python file in a dataset repository makes the Hub look for a "
        "loading script, which datasets no longer runs; remove it",
        "notes.txt: belongs to no config and is not linked from the card; remove it (push leaves it out)",
    ]
    assert "2 problem(s)" in captured.err


def test_a_missing_folder_is_one_error_line_and_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hfmed: error:") and "nowhere" in err[0]


# --- without hfmed -----------------------------------------------------------------------------


def test_a_build_streams_in_a_fresh_process_with_only_datasets(built_medmnist, tmp_path):
    """What a user of the pushed repository runs: no code of ours may be needed (imports of it fail)."""
    script = textwrap.dedent(
        """
        import sys
        for name in ("hfmed", "loading_scripts", "dataset_cards"):
            sys.modules[name] = None  # any import of our code now raises ImportError
        from datasets import load_dataset

        ds = load_dataset(sys.argv[1], "breastmnist", streaming=True)
        rows = list(ds["train"])  # read to the end: a reader left open can abort the exit (arrow#45214)
        row = rows[0]
        row["image"].load()
        names = ds["train"].features["label"].names
        ours = ("hfmed", "loading_scripts")
        assert not [m for m in sys.modules if m.split(".")[0] in ours and sys.modules[m] is not None]
        print(row["image"].size, row["image"].mode, names[row["label"]])
        """
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, str(built_medmnist)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.fullmatch(r"\(28, 28\) L (malignant|normal, benign)", done.stdout.strip().splitlines()[-1])
