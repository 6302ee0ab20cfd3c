"""Every command is a plain function first: what ``hfmed build`` runs, callable with plain values."""

from __future__ import annotations

import pytest

from hfmed.build import build
from hfmed.errors import UserError, first_line


def test_a_user_error_is_a_value_error_that_library_callers_catch_the_ordinary_way(tmp_path):
    with pytest.raises(ValueError, match="unknown collection 'nosuch'"):
        build("nosuch", ["x"], out=tmp_path / "out")
    assert issubclass(UserError, ValueError)


def test_build_takes_plain_values_and_says_what_it_built(small_npz, tmp_path):
    npz = small_npz("breastmnist")
    seen = []
    result = build(
        "medmnist",
        ["breastmnist"],
        source=npz,
        out=tmp_path / "out",
        options={"unofficial": True},
        progress=False,
        on_built=lambda name, path: seen.append((name, path)),
    )
    assert result.built == {"breastmnist": tmp_path / "out" / "breastmnist"} and seen == list(result.built.items())
    assert sorted(p.name for p in result.built["breastmnist"].iterdir())[0] == "test-00000-of-00001.parquet"


def test_an_option_a_collection_does_not_declare_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="medimeta takes no build option unofficial"):
        build("medimeta", ["bus"], source=tmp_path, out=tmp_path / "out", options={"unofficial": True})
    assert not (tmp_path / "out").exists()


def test_first_line_quotes_an_error_in_one_line():
    assert first_line(OSError("disk full\nmore detail")) == "disk full"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("bad\n"), with_type=True) == "ValueError: bad"


def test_only_the_command_lines_parse_arguments():
    # hfmed's commands are parsed in cli.py; train_hf.py's flags in training/arguments.py. Every other
    # module is library code that takes plain values, so a Python user never fakes a command line.
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    parsers = sorted(
        p.relative_to(root).as_posix()
        for folder in ("hfmed", "loading_scripts", "dataset_cards")
        for p in (root / folder).rglob("*.py")
        if "argparse" in p.read_text() or "add_parser" in p.read_text()
    )
    assert parsers == ["hfmed/cli.py", "hfmed/training/arguments.py"]
