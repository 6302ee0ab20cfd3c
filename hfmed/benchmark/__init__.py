"""``hfmed benchmark``: the MedMNIST Classification Decathlon under one AutoML protocol.

For each subset: candidate recipes (``space``) are scored by cross-validation of train+validation
pooled (``folds``, ``selection``) within a wall-time budget (``budget``, ``scheduler``); the winner
is trained with several seeds on the official split and their average is evaluated once on test
(``final``, ``clinical``, ``report``). ``decathlon`` puts every subset's result into the published
tables and ranks it. Training is train_hf.py, run as subprocesses; its flags, results.json and
predictions.npz are the interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfmed.benchmark.decathlon import SUBSETS, write_report
from hfmed.benchmark.protocol import BenchmarkResult, Target, run_subset

if TYPE_CHECKING:
    import argparse

__all__ = ["SUBSETS", "BenchmarkResult", "Target", "run_subset", "run_decathlon", "write_report", "add_command"]


DATA_OPTIONS = ("collection", "dataset", "size", "task")


def run_decathlon(
    subsets: list[str], budget_seconds: float, out: Path, source: str | None = None, **options: Any
) -> list[BenchmarkResult]:
    """Every subset in ``out/<subset>``, one after another, each with the whole budget; finished
    subsets are kept, so a rerun continues where the last one stopped. ``source`` is a folder of
    official .npz files (``<subset>.npz``, ``<subset>_<size>.npz``), used for subsets not built yet."""
    data = {k: v for k, v in options.items() if k in DATA_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in DATA_OPTIONS}
    size = data.get("size", 28)
    results = []
    for subset in subsets:
        npz = Path(source) / (f"{subset}.npz" if size == 28 else f"{subset}_{size}.npz") if source else None
        target = Target(subset=subset, source=str(npz) if npz and npz.is_file() else None, **data)
        results.append(run_subset(target, budget_seconds, Path(out) / subset, **rest))
    return results


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from hfmed.benchmark.command import add_command as add

    add(sub)
