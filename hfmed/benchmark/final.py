"""The final model's one look at the test split: average the seeds' evaluations, score, report.

The evaluation runs (each final seed's saved model scored once on validation and test) are the
only runs that open test, and this is the only code of the protocol that reads their test
predictions; it runs after the winner is recorded and every seed has finished, and nothing it
computes feeds back into a choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hfmed.benchmark import clinical
from hfmed.ensemble import CARRIED
from hfmed.ensemble import SCORED_SPLITS as SPLITS  # the splits an ensemble averages


def _combined(members: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split (labels, mean of the members' probabilities); the members must agree on labels."""
    arrays = []
    for member in members:
        with np.load(member / "predictions.npz") as npz:
            arrays.append({name: npz[name] for name in npz.files})
    combined = {}
    for split in SPLITS:
        labels = arrays[0][f"{split}_labels"]
        if any(not np.array_equal(a[f"{split}_labels"], labels) for a in arrays[1:]):
            raise RuntimeError(f"the final runs {', '.join(map(str, members))} disagree on the {split} labels")
        combined[split] = (labels, np.mean([a[f"{split}_scores"] for a in arrays], axis=0))
    return combined


def clinical_figures(task: str, y_true: np.ndarray, y_score: np.ndarray) -> dict[str, Any]:
    interval = clinical.bootstrap_interval(lambda y, s: clinical.auc_acc(task, y, s), y_true, y_score)
    return {
        "per_class": clinical.per_class(task, y_true, y_score),
        "balanced_accuracy": clinical.balanced_accuracy(task, y_true, y_score),
        "reliability": clinical.reliability(task, y_true, y_score),
        "bootstrap_95": interval,
    }


def evaluate(members: list[Path], evaluations: list[Path], out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Score the average of the final seeds' evaluations (``evaluations[i]`` scored ``members[i]``'s
    model); writes results.json, results.md, reliability.png and predictions.npz."""
    from hfmed import metrics
    from hfmed.benchmark import report

    first = json.loads((evaluations[0] / "results.json").read_text())
    task = first["task_type"]
    combined = _combined(evaluations)
    scores = {split: metrics.compute(task, *combined[split]) for split in SPLITS}
    figures = clinical_figures(task, *combined["test"])
    scores["test"] = {
        **scores["test"],
        "balanced_accuracy": figures["balanced_accuracy"],
        "ece": figures["reliability"]["ece"],
        "auc_95ci": [figures["bootstrap_95"]["auc"]["low"], figures["bootstrap_95"]["auc"]["high"]],
        "acc_95ci": [figures["bootstrap_95"]["acc"]["low"], figures["bootstrap_95"]["acc"]["high"]],
    }
    recipes = member_recipes(record, members)
    ensemble = ensemble_name([recipes[m.name] for m in members])
    members_record = []
    for member, evaluation in zip(members, evaluations):
        trained = json.loads((member / "results.json").read_text())
        scored = json.loads((evaluation / "results.json").read_text())
        members_record.append(
            {
                "folder": str(member),
                "recipe": recipes[member.name],
                "evaluation": str(evaluation),
                "command": trained.get("command"),
                "best_validation_auc": trained.get("best_validation_auc"),
                "validation": {k: scored["validation"].get(k) for k in ("auc", "acc")},
                "test": {k: (scored.get("test") or {}).get(k) for k in ("auc", "acc")},
                "wall_time_seconds": trained.get("wall_time_seconds"),
            }
        )
    results = {
        **{key: first.get(key) for key in CARRIED},
        "model": f"hfmed benchmark: {ensemble}, mean of {len(members)} seed(s)",
        "selection_metric": "auc",
        "validation": scores["validation"],
        "test": scores["test"],
        "clinical": figures,
        "members": members_record,
        "num_samples": {split: int(len(combined[split][0])) for split in SPLITS},
        "benchmark": {
            "record": "search.json",
            "plan": record["plan"],
            "winner": record["final"]["winner"],
            "ensemble": ensemble,
            "skipped": record["skipped"],
            "dropped": record["dropped"],
            "kept_as_partner": record.get("kept_as_partner", {}),
            "budget_seconds": record["budget_seconds"],
            "spent_seconds_before_evaluation": record["spent_seconds"],
        },
        "wall_time_seconds": record["spent_seconds"],
        "device": first.get("device"),
    }
    results["published"] = report.published_rows(results)
    np.savez(
        out / "predictions.npz", **{f"{s}_{k}": v for s in SPLITS for k, v in zip(("labels", "scores"), combined[s])}
    )
    report.plot_reliability(
        out / "reliability.png", figures["reliability"], f"{results['config']} (test, {len(members)} seed(s))"
    )
    (out / "results.md").write_text(report.subset_markdown(results, record), encoding="utf-8")
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(_safe(results), indent=2) + "\n")
    tmp.replace(out / "results.json")
    return results


def member_recipes(record: dict[str, Any], members: list[Path]) -> dict[str, str]:
    """Which recipe each final seed trained (all the winner in a record from before the mix)."""
    return record["final"].get("recipes") or {m.name: record["final"]["winner"] for m in members}


def ensemble_name(recipes: list[str]) -> str:
    """The final seeds' recipes, in order of first use: ``wd_ls`` for one, ``a x5 + b x5`` for a mix."""
    counts = {name: recipes.count(name) for name in dict.fromkeys(recipes)}
    return next(iter(counts)) if len(counts) == 1 else " + ".join(f"{n} x{k}" for n, k in counts.items())


def _safe(value: Any) -> Any:  # any JSON-like value, numpy scalars included
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _safe(value.item())
    return value
