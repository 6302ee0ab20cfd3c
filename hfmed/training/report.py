"""The report of a run or an ensemble: results.json (one schema), results.md, predictions.npz, figures.

``train_hf.py`` and ``hfmed ensemble`` both build their results.json through ``results_record``,
which knows every key (``SCHEMA``), refuses unknown ones and fills the ones a producer has no
value for with null, so a reader (``hfmed ensemble``, ``cv_recipes.py``, a notebook) finds the same
keys in every report. Nothing here imports torch or transformers: an ensemble is written from
saved probabilities alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

from hfmed import facts

PREDICTIONS_FILE = "predictions.npz"

#: Every key of results.json, in order, with what it holds. A run fills the training keys, an
#: ensemble the ``members``/``combination`` keys; what a producer does not know is null.
SCHEMA: dict[str, str] = {
    "collection": "medmnist or medimeta",
    "dataset": "the build folder or Hub repo id read",
    "config": "the config (subset at a size)",
    "subset": "the subset as named on the command line",
    "task": "the label column",
    "task_column_chosen": "whether --task named the label column",
    "task_type": "binary, multi-class, ordinal or multi-label",
    "num_labels": "classes (or labels)",
    "label_names": "class names in id order",
    "model": "checkpoint, scratch:<arch>-<size>, or 'ensemble of N runs'",
    "image_size": "side the model is fed",
    "selection_metric": "validation metric the checkpoint was chosen on",
    "best_checkpoint": "the chosen checkpoint folder",
    "best_validation_auc": "its validation figure",
    "validation": "validation metrics (auc, acc, ...)",
    "test": "test metrics; null under cross-validation or --eval_test false",
    "cross_validation": "folds, fold, seed, pooled splits, the column folds are grouped by; null for a "
    "run on the official splits",
    "num_samples": "rows per split evaluated (train: rows trained on)",
    "wall_time_seconds": "the whole run (an ensemble: the sum of its members')",
    "train_seconds": "training alone, without evaluation and checkpointing",
    "train_images_per_second": "training images over train_seconds, all ranks",
    "eval_images_per_second": "the last evaluation's rate",
    "train_batches_per_rank": "training batches each rank ran, rank 0 first (equal under torchrun)",
    "device": "what it ran on",
    "num_processes": "ranks",
    "precision": "fp32, bf16 or fp16",
    "channels_last": "memory format of the input",
    "torch_compile": "whether torch.compile was on",
    "versions": "torch, transformers, datasets",
    "members": "an ensemble's runs with their figures",
    "combination": "how an ensemble combines its members",
    "ensemble_seconds": "time to score an ensemble",
    "command": "the command that reproduces it (tokens redacted)",
    "arguments": "every argument of the run",
    "published": "the published rows for this subset (none under cross-validation)",
}


def results_record(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as results.json holds them: every schema key, in order; unknown keys are a bug."""
    unknown = sorted(set(values) - set(SCHEMA))
    if unknown:
        raise KeyError(f"results.json has no key(s) {', '.join(unknown)}; add them to hfmed.training.report.SCHEMA")
    return {key: values.get(key) for key in SCHEMA}


def scored(
    task: str, label_ids: ArrayLike, predictions: np.ndarray | tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) from labels and logits (or a tuple whose first item is the logits)."""
    from hfmed import metrics

    logits = predictions[0] if isinstance(predictions, (tuple, list)) else predictions
    y_true = np.asarray(label_ids)
    if task == "multi-label":
        y_true = np.rint(y_true).astype(np.int64)
    return y_true, metrics.scores_from_logits(task, logits)


def write_report(out: Path, results: dict[str, Any], scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """results.json, results.md, the two figures and predictions.npz into ``out``.

    ``scores`` maps each evaluated split to ``(labels, probabilities)``: validation and test, or
    validation alone in a cross-validation run. predictions.npz holds them all (what ``hfmed
    ensemble`` averages); the figures show test, or the held-out fold when test was not evaluated.
    """
    from hfmed.training import plots

    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out, scores)
    split = "test" if "test" in scores else "validation"
    y_true, y_score = scores[split]
    cv = results.get("cross_validation")
    members = results.get("members")
    detail = f", fold {cv['fold']} of {cv['folds']}" if cv else f", ensemble of {len(members)}" if members else ""
    title = f"{results['config']} {results['task']} ({split}{detail})"
    names, task = tuple(results["label_names"]), results["task_type"]
    plots.plot_roc(out / "roc_curve.png", task, names, y_true, y_score, title)
    plots.plot_confusion(out / "confusion_matrix.png", task, names, y_true, y_score, title)
    results["published"] = published_for(results) if results.get("test") is not None else []
    record = results_record(results)
    write_json(out / "results.json", record)
    (out / "results.md").write_text(results_markdown(record, record["published"]), encoding="utf-8")


def published_for(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The published rows for a run's subset, as the collection names it in its tables."""
    from hfmed import registry

    subset = registry.get(results["collection"]).subset_of(results["config"])
    return published_rows(results["collection"], subset)


def write_predictions(out: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """predictions.npz: ``<split>_labels`` and ``<split>_scores`` (probabilities) per split."""
    arrays = {}
    for split, (y_true, y_score) in splits.items():
        arrays[f"{split}_labels"] = np.asarray(y_true)
        arrays[f"{split}_scores"] = np.asarray(y_score, dtype=np.float64)
    tmp = out / "predictions.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(out / PREDICTIONS_FILE)


def published_rows(collection: str, subset: str) -> list[dict[str, Any]]:
    """Every published result for this subset: table title, source, method, auc/acc."""
    rows = []
    for key, table in facts.baselines().items():
        if table["collection"] != collection:
            continue
        for row in table["rows"]:
            result = row["results"].get(subset)
            if result:
                rows.append({"table": table["title"], "source": table["source"], "method": row["method"], **result})
    return rows


def input_description(results: dict[str, Any]) -> str:
    """What the model was fed: ``28 px`` for images, ``28³`` for volumes (a cube of that side)."""
    side = results["image_size"]
    return f"{side}³" if is_volumetric_run(results) else f"{side} px"


def is_volumetric_run(results: dict[str, Any]) -> bool:
    """Whether a run's config holds volumes: the MedMNIST 3D subsets, at any size."""
    if results.get("collection", "medmnist") != "medmnist":
        return False
    subset = (results.get("config") or results.get("subset") or "").split("_", 1)[0]
    return bool(facts.load("medmnist")["subsets"].get(subset, {}).get("volumetric", False))


def _fmt(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def results_markdown(results: dict[str, Any], published: list[dict[str, Any]]) -> str:
    """This run next to the published rows of the same subset (test AUC / ACC)."""
    subset = results["subset"] + (f" / {results['task']}" if results.get("task_column_chosen") else "")
    cv = results.get("cross_validation")
    if cv:
        return _cv_markdown(results, subset, cv)
    if results.get("test") is None:
        return _untested_markdown(results, subset)
    chosen = "each member's checkpoint" if results.get("members") else "model"
    lines = [
        f"# {subset}: {results['model']}",
        "",
        f"Task: {results['task_type']} ({results['num_labels']} classes), {input_description(results)} input, "
        f"{chosen} selected on validation {results['selection_metric'].upper()}; test evaluated once.",
        "",
        "| | test AUC | test ACC | validation AUC | validation ACC |",
        "|---|---|---|---|---|",
        f"| **this run** ({results['model']}) | **{_fmt(results['test'].get('auc'))}** "
        f"| **{_fmt(results['test'].get('acc'))}** "
        f"| {_fmt(results['validation'].get('auc'))} | {_fmt(results['validation'].get('acc'))} |",
        *_member_rows(results.get("members") or []),
    ]
    tables: list[str] = []
    for row in published:
        if row["table"] not in tables:
            tables.append(row["table"])
        lines.append(
            f"| {row['method']} [{tables.index(row['table']) + 1}] | {_fmt(row.get('auc'))} "
            f"| {_fmt(row.get('acc'))} | | |"
        )
    if published:
        lines += ["", "Published figures (test split):", ""]
        sources = {row["table"]: row["source"] for row in published}
        lines += [f"{i + 1}. {title}: {sources[title]}" for i, title in enumerate(tables)]
    else:
        lines += [
            "",
            f"No published figures for this subset in the baselines of loading_scripts/{results['collection']}.yaml.",
        ]
    return "\n".join(lines + _run_footer(results))


def _member_rows(members: list[dict[str, Any]]) -> list[str]:
    """An ensemble's members, each with its own figures."""
    return [
        f"| member {i + 1}: {m['folder']} | {_fmt(m['test']['auc'])} | {_fmt(m['test']['acc'])} "
        f"| {_fmt(m['validation']['auc'])} | {_fmt(m['validation']['acc'])} |"
        for i, m in enumerate(members)
    ]


def _run_footer(results: dict[str, Any]) -> list[str]:
    """Where and how fast the run went, and the command that reproduces it."""
    return [
        "",
        f"Wall time {results['wall_time_seconds']:.0f} s on {results['device']} "
        f"({results['num_processes']} process(es)); "
        f"training {_fmt_rate(results['train_images_per_second'])} images/s, evaluation "
        f"{_fmt_rate(results['eval_images_per_second'])} images/s.",
        "",
        "Command:",
        "",
        "```",
        results["command"],
        "```",
        "",
    ]


def _cv_markdown(results: dict[str, Any], subset: str, cv: dict[str, Any]) -> str:
    """A cross-validation fold: its validation figures only; published (test) rows are not comparable."""
    return "\n".join(
        [
            f"# {subset}: {results['model']}, cross-validation fold {cv['fold']} of {cv['folds']}",
            "",
            f"Task: {results['task_type']} ({results['num_labels']} classes), "
            f"{input_description(results)} input. Train and validation "
            f"were pooled and split into {cv['folds']} folds (stratified, seed {cv['seed']}"
            f"{', no ' + cv['groups'] + ' in two folds' if cv.get('groups') else ''}); this run trained on "
            f"{results['num_samples']['train']} rows and validated on the "
            f"{results['num_samples']['validation']} of fold {cv['fold']}, "
            f"its checkpoint chosen there on {results['selection_metric'].upper()}. The "
            "test split was not used. Compare recipes "
            "by the mean of their folds; published figures are test figures and are not shown beside these.",
            "",
            "| | fold AUC | fold ACC |",
            "|---|---|---|",
            f"| **this run** ({results['model']}) | "
            f"**{_fmt(results['validation'].get('auc'))}** | "
            f"**{_fmt(results['validation'].get('acc'))}** |",
            *_run_footer(results),
        ]
    )


def _untested_markdown(results: dict[str, Any], subset: str) -> str:
    """A run on the official split that did not open test (--eval_test false): validation only."""
    return "\n".join(
        [
            f"# {subset}: {results['model']}, test not read",
            "",
            f"Task: {results['task_type']} ({results['num_labels']} classes), "
            f"{results['image_size']} px input, model selected on "
            f"validation {results['selection_metric'].upper()}. The test split was not "
            "opened (--eval_test false); score this model "
            "once with `--model <this folder> --do_train false`. Published figures are "
            "test figures and are not shown beside these.",
            "",
            "| | validation AUC | validation ACC |",
            "|---|---|---|",
            f"| **this run** ({results['model']}) | "
            f"**{_fmt(results['validation'].get('auc'))}** | "
            f"**{_fmt(results['validation'].get('acc'))}** |",
            *_run_footer(results),
        ]
    )


def _fmt_rate(value: float | None) -> str:
    return "–" if not value else f"{value:.1f}"


SECRET_FLAGS = ("--hub_token", "--hub-token")


def redacted_command(argv: list[str]) -> list[str]:
    """The command line as given, with any token replaced: it is written into results and cards."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("<HUB_TOKEN>")
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in SECRET_FLAGS:
            out.append(f"{flag}=<HUB_TOKEN>" if eq else flag)
            hide_next = not eq
            continue
        out.append(arg)
    return out


def json_safe(value: Any) -> Any:
    """Arguments and metrics as JSON: NaN as null, paths and enums as strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "value"):  # enums
        return json_safe(value.value)
    return str(value)


def arguments_record(*argument_objects) -> dict[str, Any]:
    """Every argument of the run; TrainingArguments.to_dict() already hides tokens."""
    out = {}
    for obj in argument_objects:
        out[type(obj).__name__] = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    return json_safe(out)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
