"""Score averages of cross-validation runs on their held-out folds: does mixing recipes beat seeds?

Each NAME=FOLDER is a set of ``fold<i>`` train_hf.py ``--cv_folds`` runs (an ``hfmed benchmark``
``search/<candidate>`` folder, or a ``cv_recipes.py`` recipe folder). For every single set and
every combination of up to ``--most`` sets, the probabilities of their runs on each held-out fold
are averaged and scored (AUC by the MedMNIST definition); the table gives each fold and the mean.
Only the folds every set has are used. The test split is never read: fold runs hold none.

    python benchmarks/fold_mixes.py fc=runs/breast/search/wd_ls_flip_crop fc_seed2=/tmp/fc_seed2 \\
        published=runs/breast/search/published wd_ls=runs/breast/search/wd_ls --most 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hfmed import metrics  # noqa: E402


class BadSets(ValueError):
    """Folders that are not comparable sets of fold runs: one line on stderr, exit code 2."""


def fold_predictions(folder: Path) -> tuple[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """The task type and, per fold index, (held-out labels, probabilities) of a folder of fold runs."""
    runs, task = {}, None
    for run in sorted(folder.glob("fold*")):
        if not (run.is_dir() and (run / "predictions.npz").is_file()):
            continue
        results = json.loads((run / "results.json").read_text())
        task = results["task_type"]
        with np.load(run / "predictions.npz") as npz:
            if any(not name.startswith("validation_") for name in npz.files):
                raise BadSets(f"{run} holds test predictions: not a cross-validation run; name folders of fold runs")
            runs[int(results["cross_validation"]["fold"])] = (npz["validation_labels"], npz["validation_scores"])
    if not runs:
        raise BadSets(f"{folder} holds no fold<i> runs with predictions.npz; name a search/<candidate> folder")
    return task, runs


def mix_table(sets: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]], task: str, most: int) -> list[str]:
    folds = sorted(set.intersection(*(set(runs) for runs in sets.values())))
    lines = [f"| mix | {' | '.join(f'fold {f}' for f in folds)} | mean |", "|---" * (len(folds) + 2) + "|"]
    for size in range(1, most + 1):
        for names in itertools.combinations(sets, size):
            aucs = []
            for f in folds:
                labels = sets[names[0]][f][0]
                if any(not np.array_equal(sets[n][f][0], labels) for n in names[1:]):
                    raise BadSets(f"fold {f} of {', '.join(names)} holds different images; compare runs of one build")
                aucs.append(metrics.compute(task, labels, np.mean([sets[n][f][1] for n in names], axis=0))["auc"])
            lines.append(f"| {' + '.join(names)} | {' | '.join(f'{a:.3f}' for a in aucs)} | {np.mean(aucs):.3f} |")
    return lines


def stop(parser: argparse.ArgumentParser, error: BadSets) -> None:
    print(f"{parser.prog}: {error}", file=sys.stderr)
    raise SystemExit(2)


def named_folders(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Path]:
    """The NAME=FOLDER arguments as {name: folder}, in order; a malformed one is a usage error."""
    folders = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name:
            parser.error(f"a set is NAME=FOLDER, got {item!r}")
        folders[name] = Path(folder)
    return folders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--most", type=int, default=2, help="the most sets in one average (default 2)")
    args = parser.parse_args(argv)
    sets, tasks = {}, set()
    try:
        for name, folder in named_folders(parser, args.sets).items():
            task, sets[name] = fold_predictions(folder)
            tasks.add(task)
        if len(tasks) != 1:
            parser.error(f"the sets hold different task types: {', '.join(sorted(tasks))}")
        print("\n".join(mix_table(sets, tasks.pop(), args.most)))
    except BadSets as error:
        stop(parser, error)


if __name__ == "__main__":
    main()
