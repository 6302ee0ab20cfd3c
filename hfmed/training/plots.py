"""The two figures of a report: ROC curves and the confusion matrix (matplotlib, off-screen)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def plot_roc(
    path: Path, task: str, label_names: tuple[str, ...], y_true: np.ndarray, y_score: np.ndarray, title: str
) -> None:
    """One ROC curve per class (one-vs-rest) or label; the positive class only for binary tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    if task == "binary":
        curves = [(label_names[-1], (y_true == 1).astype(int), y_score[:, -1] if y_score.ndim == 2 else y_score)]
    elif task == "multi-label":
        curves = [(name, y_true[:, i], y_score[:, i]) for i, name in enumerate(label_names)]
    else:
        curves = [(name, (y_true == i).astype(int), y_score[:, i]) for i, name in enumerate(label_names)]
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, target, score in curves:
        if target.min() == target.max():
            continue  # no curve without both outcomes
        fpr, tpr, _ = roc_curve(target, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(target, score):.3f})", linewidth=1.2)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(
    path: Path, task: str, label_names: tuple[str, ...], y_true: np.ndarray, y_score: np.ndarray, title: str
) -> None:
    """The confusion matrix at the metrics' own decision rule (argmax, or 0.5 per label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    if task == "multi-label":
        matrices = multilabel_confusion_matrix(y_true, (y_score > 0.5).astype(int))
        cols = min(4, len(label_names))
        rows = math.ceil(len(label_names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.4 * rows), squeeze=False)
        for ax, name, m in zip(axes.flat, label_names, matrices):
            _draw_matrix(ax, m, ("no", "yes"), name)
        for ax in list(axes.flat)[len(label_names) :]:
            ax.axis("off")
        fig.suptitle(title)
    else:
        predicted = (y_score[:, -1] > 0.5).astype(int) if task == "binary" else y_score.argmax(-1)
        m = confusion_matrix(y_true, predicted, labels=list(range(len(label_names))))
        side = max(4.0, 0.6 * len(label_names) + 2)
        fig, ax = plt.subplots(figsize=(side, side))
        _draw_matrix(ax, m, label_names, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_matrix(ax: Axes, matrix: np.ndarray, names: Sequence[str], title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(names))
    short = [n if len(n) <= 18 else n[:17] + "…" for n in names]
    ax.set_xticks(ticks, short, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(ticks, short, fontsize="small")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black", fontsize="small"
        )
