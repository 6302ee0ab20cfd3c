"""A build killed (SIGKILL) at any point leaves a folder that a rerun completes; check never crashes.

The kill is real: a child process runs the command-line build with one library function wrapped
so that it sends itself SIGKILL at the chosen point, so no cleanup, ``finally`` or ``atexit``
runs, exactly as with ``kill -9`` or a power cut.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import make_medmnist_npz

from hfmed.cli import main
from hfmed.hub import check
from hfmed.verify import verify

N = {"train": 12, "val": 5, "test": 6}

# Wrap one function so that the child kills itself there; argv[1] names the point.
KILLER = """
import os, pathlib, signal, sys
point, config = sys.argv[1], sys.argv[2]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
from hfmed import builder, cards, writer
if point == "before":            # the lock is held, the source is about to be read, nothing written
    builder.Builder.splits = lambda self: die()
elif point == "during":          # the first split is in the hidden folder, the others are not
    real_split = writer._write_split
    def one_split(*a, **k):
        real_split(*a, **k)
        die()
    writer._write_split = one_split
elif point == "placing":         # the previous config has been moved aside, the new one not yet in
    real_rename = pathlib.Path.rename
    def rename(self, target):
        done = real_rename(self, target)
        if self.name == config:
            die()
        return done
    pathlib.Path.rename = rename
elif point == "after placing":   # the config is in place, the card not yet rewritten
    cards.write_card = lambda *a, **k: die()
elif point == "writing the card":  # the new card is a temporary file beside the old one
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith("README.md"):
            die()
        return real_replace(src, dst)
    os.replace = replace
from hfmed.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    return {
        flag: make_medmnist_npz(folder, flag, n=N, seed=i) for i, flag in enumerate(("breastmnist", "pneumoniamnist"))
    }


def build_args(sources, out: Path, flag: str, *extra: str) -> list[str]:
    return [
        "build",
        "medmnist",
        flag,
        "--source",
        str(sources[flag]),
        "--out",
        str(out),
        "--unofficial",
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize("point", ["before", "during", "placing", "after placing", "writing the card"])
def test_a_build_killed_at_any_point_is_completed_by_rerunning_it(sources, tmp_path, point):
    out = tmp_path / "medmnist"
    assert main(build_args(sources, out, "pneumoniamnist")) == 0  # another config that must survive
    extra = ["--overwrite"] if point == "placing" else []
    if extra:
        assert main(build_args(sources, out, "breastmnist")) == 0
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, point, "breastmnist", *build_args(sources, out, "breastmnist", *extra)],
        cwd=tmp_path,
    )
    assert killed.returncode == -signal.SIGKILL
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert set(visible) <= {"README.md", "images", "pneumoniamnist", "breastmnist"}

    assert main(build_args(sources, out, "breastmnist", *extra)) == 0  # the same command again
    assert not [p.name for p in out.rglob(".*")]  # no lock, temporary folder or temporary card left
    report = check(out)
    assert report.ok, report.problems
    assert report.configs == ["breastmnist", "pneumoniamnist"]
    for flag in ("breastmnist", "pneumoniamnist"):
        verify(out, flag, sources[flag])


def test_check_never_crashes_after_answering(sources, tmp_path):
    """50 runs of `hfmed check` on a clean build, each a fresh process as a user runs it: all exit 0.

    Before the fix about 1 run in 15 aborted at exit (134) after printing its verdict.
    """
    out = tmp_path / "medmnist"
    assert main(build_args(sources, out, "breastmnist")) == 0
    hfmed = Path(sys.executable).parent / "hfmed"

    def one(_):
        done = subprocess.run([str(hfmed), "check", str(out)], capture_output=True, text=True, timeout=300)
        return done.returncode, done.stderr[-300:]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(50)))
    assert [r for r in results if r[0] != 0] == []
