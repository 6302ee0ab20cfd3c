"""Choosing among candidates by their fold scores, dropping the hopeless ones early (unless they
help the leader as partners), and the mix of candidates the final seeds are spread over.

Scores are compared on the folds every compared candidate has finished (fold i is trained with
seed i for every candidate, so the comparison is paired). The score is the mean over folds of the
held-out fold's AUC, each fold's checkpoint chosen on that fold, as cv_recipes.py ranked them.
"""

from __future__ import annotations

from collections.abc import Callable

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


#: One fold's held-out labels and a candidate's probabilities for them.
FoldPredictions = tuple[np.ndarray, np.ndarray]
#: A score of (labels, probabilities), higher is better: the task's AUC.
Score = Callable[[np.ndarray, np.ndarray], float]


def hopeless(
    scores: dict[str, dict[int, float]],
    names: list[str],
    predictions: dict[str, dict[int, FoldPredictions]] | None = None,
    score: Score | None = None,
) -> list[str]:
    """The candidates to stop searching: too far below the leader on enough shared folds. With the
    held-out ``predictions`` (and their ``score``), one that far below is kept if averaging it with
    the leader raises the leader's score on those folds (three decimals, as :func:`best_prefix`
    counts a pick): the final seeds rotate over a mix, and the partner whose errors differ most from
    the leader's can be weak alone (BreastMNIST: ``published``, 0.034 below the leader on two folds,
    was the first partner the mix took)."""
    folds = shared_folds(scores, names)
    if len(folds) < MIN_FOLDS or len(names) < 2:
        return []
    ranked = ranking(scores, names)
    leader, leading = ranked[0]
    behind = [name for name, mean in ranked[1:] if leading - mean > MARGIN]
    if predictions is None or score is None:
        return behind
    alone = round(mix_score(predictions, [leader], folds, score), 3)
    return [name for name in behind if round(mix_score(predictions, [leader, name], folds, score), 3) <= alone]


def mix_score(
    predictions: dict[str, dict[int, FoldPredictions]], members: list[str], folds: list[int], score: Score
) -> float:
    """The mean over ``folds`` of the score of the members' averaged held-out probabilities."""
    per_fold = {
        f: score(predictions[members[0]][f][0], np.mean([predictions[m][f][1] for m in members], axis=0)) for f in folds
    }
    return mean_on(per_fold, folds)


def ensemble_selection(
    predictions: dict[str, dict[int, FoldPredictions]],
    order: list[str],
    folds: list[int],
    picks: int,
    score: Score,
) -> list[tuple[str, float]]:
    """Greedy ensemble selection with replacement (Caruana et al., ICML 2004; auto-sklearn builds
    its ensembles so) on the search's out-of-fold predictions: the first pick is ``order[0]`` (the
    ranking's winner); each further pick is the candidate whose addition gives the average of the
    picks so far the best mean held-out fold score, even when that is below the score before it
    (:func:`best_prefix` then leaves it out). Picking a candidate again weights it more; a tie at
    three decimals goes to the earlier in ``order``. Returns (pick, mean fold score of the picks up
    to it), ``picks`` of them."""

    def mean_score(members: list[str]) -> float:
        return mix_score(predictions, members, folds, score)

    chosen = [order[0]]
    steps = [(order[0], mean_score(chosen))]
    while len(chosen) < picks:
        tried = [(name, mean_score([*chosen, name])) for name in order]
        best = max(tried, key=lambda item: round(item[1], 3))  # max keeps the first of equals
        chosen.append(best[0])
        steps.append(best)
    return steps


def best_prefix(steps: list[tuple[str, float]]) -> list[str]:
    """The shortest run of picks from the start whose score, at three decimals, is the best of all:
    a pick that does not raise the score is not used."""
    best = max(round(score, 3) for _, score in steps)
    end = next(i for i, (_, score) in enumerate(steps) if round(score, 3) == best)
    return [name for name, _ in steps[: end + 1]]
