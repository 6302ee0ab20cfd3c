"""Cross-validation folds: stratified by label, and grouped by patient where the data names one.

Images of one patient are alike; a patient in both the training and the held-out part of a fold
makes the fold's score too good, and too good by more for recipes that memorise. So a group
(``patient_id`` in MedIMeta) is never split, and within that constraint every fold gets close to
the same share of each label.

train_hf.py assigns its own folds (``hfmed.training.cv_assignment``, label-stratified, no groups);
:func:`assign` is the grouped version it will need for ``--cv_groups`` (see the README).
"""

from __future__ import annotations

import numpy as np


def strata(labels: np.ndarray) -> np.ndarray:
    """One stratum per distinct label (a row of a multi-label matrix counts as one label)."""
    labels = np.asarray(labels)
    rows = labels.reshape(len(labels), -1)
    _, inverse = np.unique(rows, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def assign(labels: np.ndarray, folds: int, groups: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of every sample.

    Groups are placed largest first (ties in a seeded random order), each into the fold where it
    leaves the label counts closest to an equal share, with the fold's size as the tie-break.
    Without groups each sample is its own group, which gives a plain stratified split.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    stratum = strata(labels)
    n = len(stratum)
    group_ids = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    n_groups = int(group_ids.max()) + 1 if n else 0
    if n_groups < folds:
        raise ValueError(f"{n_groups} groups cannot fill {folds} folds")
    classes = int(stratum.max()) + 1
    counts = np.zeros((n_groups, classes))
    np.add.at(counts, (group_ids, stratum), 1)
    share = counts.sum(axis=0) / folds  # what each fold should hold of each label

    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    fold_counts = np.zeros((folds, classes))
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    for g in order:
        after = fold_counts + counts[g]
        excess = np.clip(after - share, 0, None).sum(axis=1)  # how far past its share each fold would go
        sizes = fold_counts.sum(axis=1)
        best = np.lexsort((sizes, excess))[0]
        fold_of_group[g] = best
        fold_counts[best] += counts[g]
    return fold_of_group[group_ids]
