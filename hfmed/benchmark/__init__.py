"""``hfmed benchmark``: the MedMNIST Classification Decathlon under one AutoML protocol.

For each subset: candidate recipes (``space``) are scored by cross-validation of train+validation
pooled (``folds``, ``selection``) within a wall-time budget (``budget``, ``scheduler``); several
seeds of the winner, and of the recipes whose average with it scored best on the held-out folds,
are trained on the official split and their average is evaluated once on test
(``final``, ``clinical``, ``report``). ``decathlon`` puts every subset's result into the published
tables and ranks it. Training is train_hf.py, run as subprocesses; its flags, results.json and
predictions.npz are the interface.
"""

from __future__ import annotations

from pathlib import Path

from hfmed.benchmark.decathlon import SUBSETS, write_report
from hfmed.benchmark.protocol import BenchmarkResult, Target, run_subset

__all__ = ["SUBSETS", "BenchmarkResult", "Target", "run_subset", "run_decathlon", "write_report"]


def run_decathlon(
    subsets: list[str],
    budget_seconds: float,
    out: Path,
    *,
    source: str | None = None,
    collection: str = "medmnist",
    dataset: str | None = None,
    size: int = 28,
    task: str | None = None,
    parallel: int | None = None,
) -> list[BenchmarkResult]:
    """Every subset in ``out/<subset>``, one after another, each with the whole budget; finished
    subsets are kept, so a rerun continues where the last one stopped. ``source`` is a folder of
    official .npz files (``<subset>.npz``, ``<subset>_<size>.npz``), used for subsets not built yet."""
    results = []
    for subset in subsets:
        npz = Path(source) / (f"{subset}.npz" if size == 28 else f"{subset}_{size}.npz") if source else None
        target = Target(
            subset=subset,
            collection=collection,
            dataset=dataset,
            source=str(npz) if npz and npz.is_file() else None,
            size=size,
            task=task,
        )
        results.append(run_subset(target, budget_seconds, Path(out) / subset, parallel=parallel))
    return results
