"""One subset's report: results.md beside the published rows, with intervals, per-class figures,
calibration and the search's record; and the reliability diagram.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hfmed.benchmark import selection

PROTOCOL = "**hfmed benchmark (this protocol)**"


def subset_key(results: dict[str, Any]) -> str:
    """The name the published tables use (MedMNIST configs without their size suffix)."""
    from hfmed import registry

    return registry.get(results["collection"]).subset_of(results["config"])


def published_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    from hfmed import facts

    rows = []
    for key, table in facts.baselines().items():
        if table["collection"] != results["collection"]:
            continue
        for row in table["rows"]:
            figures = row["results"].get(subset_key(results))
            if figures:
                rows.append(
                    {
                        "table": key,
                        "title": table["title"],
                        "source": table["source"],
                        "method": row["method"],
                        **figures,
                    }
                )
    return rows


def _f(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def subset_markdown(results: dict[str, Any], record: dict[str, Any]) -> str:
    test, clin = results["test"], results["clinical"]
    boot = clin["bootstrap_95"]
    lines = [
        f"# {results['subset']}: {results['model']}",
        "",
        f"Task: {results['task_type']} ({results['num_labels']} classes), {results['image_size']} px model input. "
        + _how_chosen(record.get("selection") or {})
        + ", each seed's checkpoint chosen on validation; test evaluated once, after every choice.",
        "",
        "| | test AUC (95% CI) | test ACC (95% CI) | validation AUC | validation ACC |",
        "|---|---|---|---|---|",
        f"| {PROTOCOL} | **{_f(test['auc'])}** ({_f(test['auc_95ci'][0])}-{_f(test['auc_95ci'][1])}) "
        f"| **{_f(test['acc'])}** ({_f(test['acc_95ci'][0])}-{_f(test['acc_95ci'][1])}) "
        f"| {_f(results['validation']['auc'])} | {_f(results['validation']['acc'])} |",
    ]
    titles: list[str] = []
    for row in results["published"]:
        titles += [row["title"]] if row["title"] not in titles else []
        lines.append(
            f"| {row['method']} [{titles.index(row['title']) + 1}] | {_f(row.get('auc'))} | {_f(row.get('acc'))} | | |"
        )
    sources = {row["title"]: row["source"] for row in results["published"]}
    lines += ["", *[f"{i + 1}. {t}: {sources[t]}" for i, t in enumerate(titles)], ""]
    lines += [
        f"Intervals: percentile bootstrap over test images, {boot['resamples']} resamples, seed {boot['seed']} "
        f"(AUC defined in {boot['auc']['defined_resamples']} of them). A margin over a published row smaller than "
        "the interval's half-width is not a difference this test set can show.",
        "",
    ]
    lines += [
        f"Balanced accuracy {_f(test['balanced_accuracy'])}; expected calibration error {_f(test['ece'])} "
        f"({clin['reliability']['bins']} equal-width bins; reliability.png).",
        "",
    ]
    per = clin["per_class"]
    names = (
        results["label_names"]
        if results["task_type"] != "binary" or len(per["sensitivity"]) == len(results["label_names"])
        else ["0", "1"]
    )
    lines += ["| class | images | sensitivity (recall) | specificity | precision |", "|---|---|---|---|---|"]
    for i, name in enumerate(names):
        lines.append(
            f"| {name} | {per['support'][i]} | {_f(per['sensitivity'][i])} | "
            f"{_f(per['specificity'][i])} | {_f(per['precision'][i])} |"
        )
    lines += ["", *search_markdown(record, results)]
    return "\n".join(lines) + "\n"


def _how_chosen(sel: dict[str, Any]) -> str:
    if not sel.get("folds_compared"):
        return "No cross-validation finished: the space's first recipe"
    if sel.get("mix"):
        return "Recipes chosen by cross-validation of train+validation (the winner, and the mix below)"
    return "Recipe chosen by cross-validation of train+validation"


def search_markdown(record: dict[str, Any], results: dict[str, Any]) -> list[str]:
    plan, sel = record["plan"], record["selection"] or {}
    lines = [
        "## Search",
        "",
        f"Budget {record['budget_seconds']:.0f} s, spent {record['spent_seconds']:.0f} s before the evaluation; "
        f"{len(record.get('slots', []))} parallel run(s). Plan: {plan['epochs']} epochs "
        f"per run, {plan['folds']} folds, "
        f"candidates {', '.join(plan['candidates'])}, final seeds {', '.join(map(str, plan['seeds']))}.",
        "",
    ]
    lines += [f"- cut by the budget: {c}" for c in plan["cut"]]
    lines += [
        f"- {'search grown by' if g['searched'] else 'cut candidate'} {g['candidate']}: {g['why']}"
        + (f"; stopped after folds {g['unfinished']}, so left out of the choice" if "unfinished" in g else "")
        for g in record.get("search_grown", [])
    ]
    grown = record.get("seeds_grown") or {}
    lines += [f"- final seeds grown: {grown['why']}"] if grown.get("why") else []
    lines += [f"- skipped: {json.dumps(s)}" for s in record["skipped"]]
    lines += [
        f"- dropped as hopeless: {n} (mean fold AUC {_f(d['mean_auc'])} against the "
        f"leader's {_f(d['leader_mean_auc'])} on folds {d['after_folds']})"
        for n, d in record["dropped"].items()
    ]
    lines += [
        f"- kept as a partner: {n} (mean fold AUC {_f(d['mean_auc'])}, more than {selection.MARGIN} below the "
        f"leader, but the leader {d['leader']} averaged with it scored {_f(d['pair_auc'])} against "
        f"{_f(d['leader_auc'])} alone on folds {d['after_folds']})"
        for n, d in record.get("kept_as_partner", {}).items()
    ]
    lines += ["", "| candidate | fold AUCs | mean on the compared folds |", "|---|---|---|"]
    means = {r["candidate"]: r["mean_fold_auc"] for r in sel.get("ranking", [])}
    for name, folds in sel.get("fold_auc", {}).items():
        lines.append(f"| {name} | {' '.join(_f(folds[k]) for k in sorted(folds, key=int))} | {_f(means.get(name))} |")
    lines += ["", f"Chosen: **{sel.get('winner')}** ({sel.get('why')})."]
    mix = sel.get("mix")
    if mix:
        steps = ", ".join(f"{s['candidate']} ({_f(s['mean_fold_auc'])})" for s in mix["steps"])
        kept = (
            f"Final seeds rotate over: **{', '.join(mix['rotation'])}**"
            if len(mix["rotation"]) > 1
            else f"Final seeds: **{mix['rotation'][0]}** alone, as no other recipe raised the score"
        )
        lines += [
            "",
            f"{kept} (greedy ensemble selection on the held-out fold predictions; picks and the mean fold "
            f"AUC of their average: {steps}; the shortest run of picks with the best score is kept).",
        ]
    lines += ["", "| final seed | recipe | validation AUC | test AUC | test ACC |", "|---|---|---|---|---|"]
    for m in results["members"]:
        lines.append(
            f"| {Path(m['folder']).name} | {m['recipe']} | {_f(m['validation']['auc'])} | "
            f"{_f(m['test']['auc'])} | {_f(m['test']['acc'])} |"
        )
    return lines


def plot_reliability(path: Path, reliability: dict[str, Any], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(reliability["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    accuracy = np.asarray([np.nan if a is None else a for a in reliability["accuracy"]], dtype=float)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centres, np.nan_to_num(accuracy), width=width * 0.9, color="#4878d0", label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set(
        xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{title}\nECE {reliability['ece']:.3f}"
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
