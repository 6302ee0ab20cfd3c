"""Score cross-validation runs at their best epoch and at the end of training.

A search scores each fold at the epoch that fold's held-out AUC peaked, a choice no trained model
can make: the best of 100 noisy figures is optimistic, most for a recipe that peaks early and then
overfits. Each NAME=FOLDER is a set of ``fold<i>`` train_hf.py ``--cv_folds`` runs (an ``hfmed
benchmark`` ``search/<candidate>`` folder, or a ``cv_recipes.py`` recipe folder); their
``trainer_state.json`` holds the held-out fold's AUC after every epoch. The table gives, on the
folds every set has, the mean over folds of: the best epoch's AUC (the search's score), the last
epoch's, and the mean of the last ``--last`` epochs (what training ends at, less one epoch's luck),
then each fold's best epoch. The test split is never read: fold runs hold none.

    python benchmarks/fold_curves.py mixup=runs/breast/search/wd_ls_flip_crop_mixup_cosine_ema \\
        published=runs/breast/search/published --last 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from fold_mixes import BadSets, named_folders, stop  # a script's own folder is on sys.path


def fold_curves(folder: Path) -> dict[int, list[tuple[float, float]]]:
    """Per fold index, (epoch, held-out AUC) of each evaluation, in order, of a folder of fold runs."""
    curves = {}
    for run in sorted(folder.glob("fold*")):
        state, results = run / "trainer_state.json", run / "results.json"
        if not (state.is_file() and results.is_file()):
            continue
        fold = json.loads(results.read_text()).get("cross_validation", {}).get("fold")
        if fold is None:
            raise BadSets(f"{run} is not a cross-validation run (no cross_validation.fold); name folders of fold runs")
        history = json.loads(state.read_text())["log_history"]
        curve = [(entry["epoch"], entry["eval_auc"]) for entry in history if "eval_auc" in entry]
        if curve:
            curves[int(fold)] = curve
    if not curves:
        raise BadSets(
            f"{folder} holds no finished fold<i> runs with trainer_state.json; name a search/<candidate> folder"
        )
    return curves


def curve_table(sets: dict[str, dict[int, list[tuple[float, float]]]], last: int) -> list[str]:
    folds = sorted(set.intersection(*(set(curves) for curves in sets.values())))
    if not folds:
        raise BadSets(f"the sets have no fold in common: {', '.join(sets)}; compare runs of the same --cv_folds")
    peaks = f"best epochs of folds {', '.join(map(str, folds))}"
    lines = [f"| set | best epoch | last epoch | mean of the last {last} | {peaks} |", "|---|---|---|---|---|"]
    for name, curves in sets.items():
        aucs = {f: [auc for _, auc in curves[f]] for f in folds}
        best = np.mean([max(aucs[f]) for f in folds])
        end = np.mean([aucs[f][-1] for f in folds])
        tail = np.mean([np.mean(aucs[f][-last:]) for f in folds])
        epochs = " ".join(f"{curves[f][int(np.argmax(aucs[f]))][0]:g}" for f in folds)  # the first of equal peaks
        lines.append(f"| {name} | {best:.3f} | {end:.3f} | {tail:.3f} | {epochs} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--last", type=int, default=10, help="epochs averaged at the end of training (default 10)")
    args = parser.parse_args(argv)
    if args.last < 1:
        parser.error(f"--last must be at least 1, got {args.last}")
    try:
        sets = {name: fold_curves(folder) for name, folder in named_folders(parser, args.sets).items()}
        print("\n".join(curve_table(sets, args.last)))
    except BadSets as error:
        stop(parser, error)


if __name__ == "__main__":
    main()
