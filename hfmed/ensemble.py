"""Averaging the predictions of several ``train_hf.py`` runs into one model (``hfmed ensemble``).

Each run folder holds ``results.json`` and ``predictions.npz`` (validation and test
probabilities, written by ``train_hf.py``). The ensemble's probabilities are the mean of its
members'; AUC and ACC are then computed by the same MedMNIST definitions as every run. Members are
whole runs, each of which chose its own checkpoint on validation; the ensemble adds no choice of
its own, so its test figures are as honest as its members'.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hfmed.errors import UserError
from hfmed.training import report

#: results.json fields that must agree between members: they are the same task on the same data.
SAME = ("collection", "config", "task", "task_type", "label_names")
SCORED_SPLITS = ("validation", "test")  # the splits whose probabilities are averaged
#: What an ensemble's results.json takes from its first member: the data and task, not the model.
CARRIED = (
    "collection",
    "dataset",
    "config",
    "subset",
    "task",
    "task_column_chosen",
    "task_type",
    "num_labels",
    "label_names",
    "image_size",
)


def _member(folder: Path) -> dict[str, Any]:
    results_file, predictions_file = folder / "results.json", folder / report.PREDICTIONS_FILE
    if not results_file.is_file():
        raise UserError(f"{results_file} not found; give the output folders of finished train_hf.py runs")
    if not predictions_file.is_file():
        raise UserError(
            f"{predictions_file} not found; evaluate that run again to write it: "
            f"python train_hf.py --model {folder} --do_train false --output_dir <new "
            "folder> (plus its --subset and --dataset)"
        )
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
        with np.load(predictions_file) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError) as e:
        raise UserError(f"{folder}: cannot read its results ({e}); rerun that training run") from None
    cv = results.get("cross_validation")
    if cv:
        raise UserError(
            f"{folder} is cross-validation fold {cv.get('fold')} of {cv.get('folds')} and has no test predictions; "
            "an ensemble combines runs trained on the official splits"
        )
    missing = [
        f"{split}_{kind}" for split in SCORED_SPLITS for kind in ("labels", "scores") if f"{split}_{kind}" not in arrays
    ]
    if missing:
        raise UserError(f"{predictions_file} lacks {', '.join(missing)}; rerun that training run")
    return {"folder": folder, "results": results, "arrays": arrays}


def combine(folders: list[Path]) -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The members, and per split (labels, mean probabilities); refuses runs of different tasks."""
    if len(folders) < 2:
        raise UserError("an ensemble needs at least two run folders")
    resolved = [f.resolve() for f in folders]
    if len(set(resolved)) != len(resolved):
        raise UserError("the same run folder is given twice; each member counts once")
    members = [_member(f) for f in folders]
    first = members[0]
    for other in members[1:]:
        for key in SAME:
            if other["results"].get(key) != first["results"].get(key):
                raise UserError(
                    f"{other['folder']} was trained on {key} {other['results'].get(key)!r}, {first['folder']} on "
                    f"{first['results'].get(key)!r}; an ensemble combines runs of one task"
                )
        for split in SCORED_SPLITS:
            a, b = first["arrays"], other["arrays"]
            if a[f"{split}_labels"].shape != b[f"{split}_labels"].shape or not np.array_equal(
                a[f"{split}_labels"], b[f"{split}_labels"]
            ):
                raise UserError(
                    f"{other['folder']} and {first['folder']} have different {split} labels (other rows, or another "
                    "order: --streaming with shuffling?); an ensemble needs the same rows in the same order"
                )
            if a[f"{split}_scores"].shape != b[f"{split}_scores"].shape:
                raise UserError(f"{other['folder']} and {first['folder']} give {split} scores of different shapes")
    combined = {}
    for split in SCORED_SPLITS:
        scores = np.mean([m["arrays"][f"{split}_scores"] for m in members], axis=0)
        combined[split] = (first["arrays"][f"{split}_labels"], scores)
    return members, combined


def _row(results: dict[str, Any], split: str, metric: str) -> float | None:
    return (results.get(split) or {}).get(metric)


def ensemble(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """Score the ensemble of the train_hf.py output folders ``runs`` and write its report into ``out``.

    Returns the ensemble's ``results.json`` record (``validation`` and ``test`` hold its figures).
    """
    from hfmed import metrics

    folders, out = [Path(r) for r in runs], Path(out)
    started = time.perf_counter()
    members, combined = combine(folders)
    _check_out(out, members, overwrite)
    first = members[0]["results"]
    task = first["task_type"]
    scores = {split: metrics.compute(task, y_true, y_score) for split, (y_true, y_score) in combined.items()}
    names = [str(m["folder"]) for m in members]
    results = {
        **{key: first.get(key) for key in CARRIED},
        "model": f"ensemble of {len(members)} runs",
        "selection_metric": first.get("selection_metric", "auc"),
        "members": [_member_summary(name, m["results"]) for name, m in zip(names, members)],
        "combination": "mean of the members' probabilities",
        "validation": scores["validation"],
        "test": scores["test"],
        "num_samples": {split: int(len(combined[split][0])) for split in SCORED_SPLITS},
        "wall_time_seconds": sum(float(m["results"].get("wall_time_seconds") or 0) for m in members),
        "device": first.get("device"),
        "num_processes": first.get("num_processes", 1),
        "command": "hfmed ensemble " + " ".join(names) + f" --out {out}",
        "ensemble_seconds": time.perf_counter() - started,
    }
    # Everything goes to a sibling temporary folder first: a failure leaves no half-written report.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report.write_report(staging, results, combined)
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report.results_record(results)


def _check_out(out: Path, members: list[dict[str, Any]], overwrite: bool) -> None:
    out_resolved = out.resolve()
    for m in members:
        if m["folder"].resolve() == out_resolved or m["folder"].resolve() in out_resolved.parents:
            raise UserError(f"--out {out} is inside the member run {m['folder']}; choose a new folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already exists and is not empty; choose a new folder or pass --overwrite")


def _member_summary(folder: str, results: dict[str, Any]) -> dict[str, Any]:
    return {
        "folder": folder,
        "model": results.get("model"),
        "command": results.get("command"),
        "best_validation_auc": results.get("best_validation_auc"),
        "validation": {k: _row(results, "validation", k) for k in ("auc", "acc")},
        "test": {k: _row(results, "test", k) for k in ("auc", "acc")},
    }
