"""Choosing among candidates by their fold scores, and dropping the hopeless ones early.

Scores are compared on the folds every compared candidate has finished (fold i is trained with
seed i for every candidate, so the comparison is paired). The score is the mean over folds of the
held-out fold's AUC, each fold's checkpoint chosen on that fold, as cv_recipes.py ranked them.
"""

from __future__ import annotations

import numpy as np

#: A candidate is dropped when, over at least MIN_FOLDS shared folds, its mean fold AUC is more
#: than MARGIN below the leader's. On BreastMNIST the two recipes' fold AUCs differed by up to
#: 0.04 on one fold but 0.007 on the mean of five; 0.03 over two or more folds is well past noise.
MARGIN = 0.03
MIN_FOLDS = 2


def shared_folds(scores: dict[str, dict[int, float]], names: list[str]) -> list[int]:
    common = None
    for name in names:
        folds = set(scores.get(name, {}))
        common = folds if common is None else common & folds
    return sorted(common or [])


def mean_on(scores: dict[int, float], folds: list[int]) -> float:
    values = [scores[f] for f in folds if scores[f] is not None and not np.isnan(scores[f])]
    return float(np.mean(values)) if values else float("-inf")


def ranking(scores: dict[str, dict[int, float]], names: list[str]) -> list[tuple[str, float]]:
    """(name, mean fold AUC on the shared folds), best first; ties keep the space's order."""
    folds = shared_folds(scores, names)
    means = [(name, mean_on(scores[name], folds)) for name in names]
    return sorted(means, key=lambda item: -round(item[1], 3))  # stable: a tie at three decimals keeps the order


def hopeless(scores: dict[str, dict[int, float]], names: list[str]) -> list[str]:
    """The candidates to stop searching: too far below the leader on enough shared folds."""
    folds = shared_folds(scores, names)
    if len(folds) < MIN_FOLDS or len(names) < 2:
        return []
    ranked = ranking(scores, names)
    leader = ranked[0][1]
    return [name for name, mean in ranked[1:] if leader - mean > MARGIN]
