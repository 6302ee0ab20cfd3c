"""What a regular (non-editable) install ships: every hfmed package, and the collections' folders
under ``hfmed`` rather than as top-level packages with generic names."""

from __future__ import annotations

import pytest
from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_package_of_the_checkout_is_installed():
    packages = set(_setuptools()["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "hfmed").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= packages, f"add to pyproject.toml's packages: {sorted(on_disk - packages)}"


def test_the_collection_folders_install_under_hfmed():
    setup = _setuptools()
    assert setup["package-dir"] == {"hfmed.loading_scripts": "loading_scripts", "hfmed.dataset_cards": "dataset_cards"}
    assert not [p for p in setup["packages"] if p.split(".")[0] != "hfmed"]
    assert "*.yaml" in setup["package-data"]["hfmed.loading_scripts"]


def test_the_wheel_holds_the_collections_under_hfmed_and_nothing_at_the_top(tmp_path):
    """Built from a copy of the sources (setuptools writes build/ beside them), without network."""
    import shutil
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("hfmed", "loading_scripts", "dataset_cards"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(tmp_path),
        str(src),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("hfmed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "hfmed",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    for path in (
        "hfmed/loading_scripts/medmnist.py",
        "hfmed/loading_scripts/medmnist.yaml",
        "hfmed/loading_scripts/medimeta.yaml",
        "hfmed/dataset_cards/medmnist/template.md",
        "hfmed/dataset_cards/medmnist/subsets/breastmnist.md",
        "hfmed/dataset_cards/medimeta/citation.bib",
        "hfmed/hub/upload.py",
    ):
        assert path in names
