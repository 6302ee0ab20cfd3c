"""The decathlon: every subset under one protocol, and the published tables with its row in them.

Ranks follow the decathlon's reading: within one published table, on each subset, every method is
ranked by test AUC and by test ACC (1 = best, ties share the mean rank); a method's subset rank is
the mean of the two, and its average rank the mean over the subsets this protocol ran. This
protocol's figures are rounded to three decimals first, as the tables print theirs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hfmed.benchmark.report import PROTOCOL, _f, subset_key
from hfmed.errors import UserError

#: The ten subsets of the v1 decathlon, by their v2 names (OrganMNIST_Axial is organamnist, ...).
SUBSETS = (
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)


def average_ranks(values: list[float | None]) -> list[float | None]:
    """Rank 1 for the highest value; ties share the mean of their ranks; None stays unranked."""
    present = [v for v in values if v is not None]
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        better = sum(1 for w in present if w > v)
        equal = sum(1 for w in present if w == v)
        out.append(better + (equal + 1) / 2)
    return out


def collect(folder: Path) -> dict[str, dict[str, Any]]:
    """Finished benchmarks under ``folder`` (itself, or its subfolders), by published subset name."""
    candidates = [folder / "results.json", *sorted(folder.glob("*/results.json"))]
    found = {}
    for path in candidates:
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        if "benchmark" in results:
            found[subset_key(results)] = results
    if not found:
        raise UserError(
            f"{folder} holds no finished `hfmed benchmark` run (no results.json with a search record); run one first"
        )
    return found


def table_rows(table: dict[str, Any], runs: dict[str, dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The subsets this table and these runs share, and one row per method (ours first), ranked."""
    subsets = [s for s in table["subsets"] if s in runs]
    methods = [
        {
            "method": PROTOCOL,
            "results": {s: {m: _round(runs[s]["test"].get(m)) for m in ("auc", "acc")} for s in subsets},
        }
    ]
    methods += [{"method": row["method"], "results": row["results"]} for row in table["rows"]]
    for m in methods:
        m["ranks"] = {}
    for s in subsets:
        per_metric = []
        for metric in ("auc", "acc"):
            per_metric.append(average_ranks([m["results"].get(s, {}).get(metric) for m in methods]))
        for i, m in enumerate(methods):
            got = [r[i] for r in per_metric if r[i] is not None]
            m["ranks"][s] = float(np.mean(got)) if got else None
    for m in methods:
        got = [r for r in m["ranks"].values() if r is not None]
        m["average_rank"] = float(np.mean(got)) if got else None
    return subsets, methods


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def tables(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    from hfmed import facts

    collection = next(iter(runs.values()))["collection"]
    out = []
    for key, table in facts.baselines().items():
        if table["collection"] != collection:
            continue
        subsets_of = list(dict.fromkeys(s for row in table["rows"] for s in row["results"]))
        subsets, methods = table_rows({**table, "subsets": subsets_of}, runs)
        if subsets:
            out.append(
                {"key": key, "title": table["title"], "source": table["source"], "subsets": subsets, "methods": methods}
            )
    return out


def markdown(runs: dict[str, dict[str, Any]], ranked: list[dict[str, Any]]) -> str:
    lines = [
        "# MedMNIST Classification Decathlon: this protocol beside the published rows",
        "",
        "Each cell: test AUC / ACC (rank on this subset). Ranks: per subset, the mean of the AUC rank and the ACC rank "
        "within the table; average rank over the subsets run. This protocol's figures are rounded to three decimals.",
        "",
    ]
    lines += [
        "## This protocol's runs",
        "",
        "| subset | px | test AUC (95% CI) | test ACC (95% CI) | balanced ACC | ECE | "
        "recipes | seeds | budget s | spent s | cut or skipped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in runs.items():
        t, b = r["test"], r["benchmark"]
        cuts = len(b["plan"]["cut"]) + len(b["skipped"])
        lines.append(
            f"| {s} | {r['image_size']} | {_f(t['auc'])} ({_f(t['auc_95ci'][0])}-{_f(t['auc_95ci'][1])}) "
            f"| {_f(t['acc'])} ({_f(t['acc_95ci'][0])}-{_f(t['acc_95ci'][1])}) | "
            f"{_f(t.get('balanced_accuracy'))} | {_f(t.get('ece'))} "
            f"| {b.get('ensemble', b['winner'])} | {len(r['members'])} | {b['budget_seconds']:.0f} | "
            f"{b['spent_seconds_before_evaluation']:.0f} | {cuts} |"
        )
    missing = [s for s in SUBSETS if s not in runs]
    if missing and any(s in SUBSETS for s in runs):  # the decathlon's own subsets, not a 3D run's
        lines += ["", f"Not run (no finished benchmark in this folder): {', '.join(missing)}."]
    for t in ranked:
        lines += ["", f"## {t['title']}", "", f"Source: {t['source']}", ""]
        lines += [
            "| method | " + " | ".join(t["subsets"]) + " | average rank |",
            "|---" * (len(t["subsets"]) + 2) + "|",
        ]
        for m in t["methods"]:
            cells = []
            for s in t["subsets"]:
                fig = m["results"].get(s, {})
                rank = m["ranks"].get(s)
                cells.append(f"{_f(fig.get('auc'))} / {_f(fig.get('acc'))} ({'–' if rank is None else f'{rank:g}'})")
            avg = m["average_rank"]
            lines.append(f"| {m['method']} | " + " | ".join(cells) + f" | {'–' if avg is None else f'{avg:.2f}'} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, ranked: list[dict[str, Any]]) -> None:
    """Per metric, each subset's published figures (grey, one marker per table) and this protocol's (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = list(dict.fromkeys(s for t in ranked for s in t["subsets"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(subsets) + 3), 4))
    markers = "osD^v"
    for ax, metric in zip(axes, ("auc", "acc")):
        for ti, t in enumerate(ranked):
            for m in t["methods"][1:]:
                xs = [subsets.index(s) for s in t["subsets"] if m["results"].get(s, {}).get(metric) is not None]
                ys = [m["results"][subsets[x]][metric] for x in xs]
                ax.scatter(
                    xs,
                    ys,
                    color="0.6",
                    marker=markers[ti % len(markers)],
                    s=18,
                    label=t["key"] if m is t["methods"][1] else None,
                )
        ours = ranked[0]["methods"][0]["results"] if ranked else {}
        xs = [i for i, s in enumerate(subsets) if ours.get(s, {}).get(metric) is not None]
        ax.scatter(
            xs,
            [ours[subsets[i]][metric] for i in xs],
            color="#d62728",
            marker="*",
            s=90,
            label="this protocol",
            zorder=3,
        )
        ax.set_xticks(range(len(subsets)), subsets, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"test {metric.upper()}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: Path) -> dict[str, Any]:
    """results.md and decathlon.png in ``folder`` (decathlon.md when ``folder`` is itself one subset's run,
    whose results.md is that run's own report)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--report {folder} is not a folder; give the --out folder of `hfmed benchmark`")
    runs = collect(folder)
    ranked = tables(runs)
    name = "decathlon.md" if (folder / "results.json").is_file() else "results.md"
    (folder / name).write_text(markdown(runs, ranked), encoding="utf-8")
    if ranked:
        plot(folder / "decathlon.png", ranked)
    return {
        "markdown": folder / name,
        "plot": folder / "decathlon.png" if ranked else None,
        "subsets": list(runs),
        "tables": ranked,
    }
