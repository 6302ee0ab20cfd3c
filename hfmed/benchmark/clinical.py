"""Figures a clinician-minded reader asks for beside AUC and ACC, as pure numpy functions.

Decisions follow the MedMNIST ACC rule, so these figures describe the same predictions ACC does:
argmax for multi-class and ordinal tasks, probability of the positive class > 0.5 for binary
tasks, each label's probability > 0.5 for multi-label tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

#: Fixed so that an interval is the same every time the same predictions are scored.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
ECE_BINS = 10


def _positive(y_score: np.ndarray) -> np.ndarray:
    y_score = np.asarray(y_score, dtype=np.float64)
    return y_score.reshape(len(y_score), -1)[:, -1]


def decisions(task: str, y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(truth, decision) as 0/1 indicator matrices, one column per class (per label if multi-label)."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "multi-label":
        truth = np.asarray(y_true).reshape(y_score.shape).astype(bool)
        return truth, y_score > 0.5
    labels = np.asarray(y_true).reshape(-1).astype(np.int64)
    if task == "binary":
        predicted = (_positive(y_score) > 0.5).astype(np.int64)
        classes = 2
    else:
        predicted = np.argmax(y_score, axis=1)
        classes = y_score.shape[1]
    eye = np.eye(classes, dtype=bool)
    return eye[labels], eye[predicted]


def per_class(task: str, y_true: ArrayLike, y_score: ArrayLike) -> dict[str, list[float | None]]:
    """Sensitivity (recall), specificity and precision of each class, one-vs-rest; None where undefined."""
    truth, decided = decisions(task, y_true, y_score)
    tp = (truth & decided).sum(axis=0)
    fn = (truth & ~decided).sum(axis=0)
    tn = (~truth & ~decided).sum(axis=0)
    fp = (~truth & decided).sum(axis=0)
    return {
        "sensitivity": _ratios(tp, tp + fn),
        "specificity": _ratios(tn, tn + fp),
        "precision": _ratios(tp, tp + fp),
        "support": [int(v) for v in tp + fn],
    }


def _ratios(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [float(n / d) if d else None for n, d in zip(num, den)]


def balanced_accuracy(task: str, y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Mean per-class sensitivity; for multi-label, the mean over labels of (sensitivity + specificity) / 2."""
    figures = per_class(task, y_true, y_score)
    if task == "multi-label":
        pairs = [
            (s + p) / 2
            for s, p in zip(figures["sensitivity"], figures["specificity"])
            if s is not None and p is not None
        ]
        return float(np.mean(pairs)) if pairs else float("nan")
    present = [s for s in figures["sensitivity"] if s is not None]
    return float(np.mean(present)) if present else float("nan")


def confidences(task: str, y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) pairs for calibration: the top-class probability and whether that class
    is right; for multi-label every (image, label) pair counts, with the label's probability and its
    truth (a probability of 0.3 should be right 30% of the time)."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "multi-label":
        return y_score.reshape(-1), np.asarray(y_true).reshape(-1).astype(np.float64)
    labels = np.asarray(y_true).reshape(-1).astype(np.int64)
    if task == "binary":
        p = _positive(y_score)
        decided = (p > 0.5).astype(np.int64)
        return np.where(decided == 1, p, 1 - p), (decided == labels).astype(np.float64)
    predicted = np.argmax(y_score, axis=1)
    return y_score.max(axis=1), (predicted == labels).astype(np.float64)


def reliability(task: str, y_true: ArrayLike, y_score: ArrayLike, bins: int = ECE_BINS) -> dict[str, Any]:
    """Equal-width bins over [0, 1]: each bin's mean confidence, accuracy and count, and the ECE
    (the count-weighted mean gap between accuracy and confidence)."""
    conf, correct = confidences(task, y_true, y_score)
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)  # a confidence of exactly 1.0 goes in the last bin
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    filled = counts > 0
    mean_conf = np.where(filled, conf_sum / np.maximum(counts, 1), np.nan)
    accuracy = np.where(filled, correct_sum / np.maximum(counts, 1), np.nan)
    ece = float(np.sum(np.abs(accuracy[filled] - mean_conf[filled]) * counts[filled]) / max(len(conf), 1))
    return {
        "bins": bins,
        "edges": np.linspace(0, 1, bins + 1).tolist(),
        "confidence": [None if np.isnan(v) else float(v) for v in mean_conf],
        "accuracy": [None if np.isnan(v) else float(v) for v in accuracy],
        "count": counts.tolist(),
        "ece": ece,
    }


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count half); None when one class is absent."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_acc(task: str, y_true: ArrayLike, y_score: ArrayLike) -> dict[str, float]:
    """The MedMNIST AUC and ACC (hfmed.metrics.compute's definitions, classes without both outcomes
    left out of the AUC mean), fast enough to run a thousand times for a bootstrap."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "multi-label":
        truth = np.asarray(y_true).reshape(y_score.shape).astype(bool)
        columns = [(truth[:, i], y_score[:, i]) for i in range(y_score.shape[1])]
        acc = float(np.mean((y_score > 0.5) == truth))
    else:
        labels = np.asarray(y_true).reshape(-1).astype(np.int64)
        if task == "binary":
            columns = [(labels == 1, _positive(y_score))]
            acc = float(np.mean((_positive(y_score) > 0.5) == (labels == 1)))
        else:
            columns = [(labels == i, y_score[:, i]) for i in range(y_score.shape[1])]
            acc = float(np.mean(np.argmax(y_score, axis=1) == labels))
    aucs = [a for a in (_auc(pos, score) for pos, score in columns) if a is not None]
    return {"auc": float(np.mean(aucs)) if aucs else float("nan"), "acc": acc}


def bootstrap_interval(
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    y_true: ArrayLike,
    y_score: ArrayLike,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap over images: ``score(y_true[i], y_score[i])`` for ``resamples`` seeded
    draws with replacement; per figure, the interval and how many draws gave a defined value."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        pick = rng.integers(0, len(y_true), len(y_true))
        for name, value in score(y_true[pick], y_score[pick]).items():
            draws.setdefault(name, []).append(value)
    tail = (1 - level) / 2 * 100
    out: dict[str, Any] = {"resamples": resamples, "seed": seed, "level": level}
    for name, values in draws.items():
        defined = np.asarray([v for v in values if v is not None and not np.isnan(v)])
        low, high = np.percentile(defined, [tail, 100 - tail]) if len(defined) else (np.nan, np.nan)
        out[name] = {"low": float(low), "high": float(high), "defined_resamples": int(len(defined))}
    return out
