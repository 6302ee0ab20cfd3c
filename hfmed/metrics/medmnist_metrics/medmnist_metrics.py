"""MedMNIST AUC and ACC, as defined by the medmnist Evaluator, packaged as an ``evaluate`` metric.

This file is the only implementation of the definitions. ``evaluate.load`` copies it into its
module cache and imports the copy on its own, so it may import nothing from hfmed; the package's
``hfmed.metrics.compute`` loads this same file by path instead of keeping a second version.

Why not the Hub's ``roc_auc`` and ``accuracy``: they fail offline, and they answer a different
question. MedMNIST's multi-label ACC is the mean of per-label accuracies (not exact-match subset
accuracy), its multi-class AUC is the unweighted mean of one-vs-rest AUCs over classes (not
sklearn's ``ovo`` or weighted averages), and binary tasks score only the last probability column.
Published baselines (medmnist.com, MedMNIST+) were computed this way, so numbers are only
comparable if ours are too.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

# ``hfmed.metrics`` loads this file for the definitions alone; only ``evaluate.load`` needs the
# wrapper at the end, and importing evaluate imports torch and transformers, which a command
# that only scores saved probabilities (``hfmed ensemble``) should not pay for.
DEFINITIONS_ONLY = __name__ == "hfmed.metrics._medmnist_metrics"
if not DEFINITIONS_ONLY:
    import datasets
    import evaluate

TASKS = ("binary", "multi-class", "ordinal", "multi-label")
THRESHOLD = 0.5

_CITATION = """\
@article{medmnistv2,
    title={MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification},
    author={Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and Zhao, Lin and Ke, Bilian
            and Pfister, Hanspeter and Ni, Bingbing},
    journal={Scientific Data},
    volume={10},
    number={1},
    pages={41},
    year={2023},
    publisher={Nature Publishing Group UK London}
}
"""

_DESCRIPTION = """\
AUC and ACC exactly as the medmnist Evaluator computes them, so that results can be set beside
the published MedMNIST v2 / MedMNIST+ baselines. Pick the task with `config_name`:

- binary: AUC = roc_auc(y, p[:, -1]) (or roc_auc(y, p) for one probability per sample);
  ACC = accuracy(y, p[:, -1] > 0.5).
- multi-class and ordinal: AUC = unweighted mean over classes i of roc_auc(y == i, p[:, i]);
  ACC = accuracy(y, argmax(p)).
- multi-label: AUC = mean over labels i of roc_auc(y[:, i], p[:, i]);
  ACC = mean over labels i of accuracy(y[:, i], p[:, i] > 0.5) (not exact-match accuracy).

Predictions are probabilities: softmax outputs, or sigmoid outputs for multi-label (and for a
binary model with a single logit).

One departure from the Evaluator: a class (or label) whose one-vs-rest target is constant on the
evaluated samples, e.g. absent from a small validation set, has no ROC AUC. Under the Evaluator,
sklearn then raises (older releases) or returns NaN, which makes the whole mean NaN (recent
releases). Here the class is left out of the AUC mean with a `SkippedClassWarning`, and the AUC
is NaN only when no class is left. ACC is unaffected. On sets where every class occurs, the
numbers are the Evaluator's.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per-sample probabilities.
        binary: [p0, p1] (softmax over two logits), [p1] or a bare p1 (sigmoid of one logit).
        multi-class, ordinal: one probability per class, [p0, ..., pC-1].
        multi-label: one probability per label, [p0, ..., pL-1].
    references: per-sample truth.
        binary, multi-class, ordinal: the class index (int); flatten an (N, 1) label array first.
        multi-label: the 0/1 indicator vector, one entry per label (a multi-hot vector, not the
        list of positive label ids that a `Sequence(ClassLabel)` column holds).
Returns:
    auc (float): ROC AUC as defined above; NaN if no class has both outcomes present.
    acc (float): accuracy as defined above.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("path/to/medmnist_metrics", config_name="multi-class")
    >>> metric.compute(references=[0, 1, 2], predictions=[[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3]])
    {'auc': 1.0, 'acc': 0.6666666666666666}
"""


class SkippedClassWarning(UserWarning):
    """A class had no ROC AUC on these samples and was left out of the mean."""


def _drop_inner_singletons(array: np.ndarray) -> np.ndarray:
    """The Evaluator's ``squeeze``, except that axis 0 (samples) is never dropped.

    ``np.squeeze`` would turn a one-sample batch of C scores into a vector of C samples.
    """
    if array.ndim == 0:
        raise ValueError("expected one entry per sample, got a scalar")
    return array.reshape(array.shape[:1] + tuple(d for d in array.shape[1:] if d != 1))


def _prepare(task: str, y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Bring inputs to the Evaluator's shapes and reject ones it would silently mis-score."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 0 or y_score.ndim == 0 or len(y_true) != len(y_score):
        raise ValueError(
            "y_true and y_score need one entry per sample each; "
            f"got shapes {y_true.shape} and {y_score.shape}"
        )
    if len(y_true) == 0:
        raise ValueError("no samples to evaluate")
    if task == "multi-label":
        y_true = y_true.reshape(len(y_true), -1)
        y_score = y_score.reshape(len(y_score), -1)
        if y_true.shape != y_score.shape:
            raise ValueError(
                f"multi-label needs one score per label: y_true has {y_true.shape[1]} labels, "
                f"y_score {y_score.shape[1]} columns"
            )
        if not np.isin(y_true, (0, 1)).all():
            raise ValueError("multi-label y_true must be a 0/1 indicator matrix (one column per label)")
        return y_true, y_score

    y_true = _drop_inner_singletons(y_true)
    y_score = _drop_inner_singletons(y_score)
    if y_true.ndim != 1:
        raise ValueError(f"{task} y_true must hold one class index per sample; got shape {y_true.shape}")
    if task == "binary":
        if y_score.ndim > 2 or (y_score.ndim == 2 and y_score.shape[1] != 2):
            raise ValueError(
                f"binary y_score must be one probability or two per sample; got shape {y_score.shape}"
            )
        if not np.isin(y_true, (0, 1)).all():
            raise ValueError("binary y_true must hold 0 or 1")
        return y_true, y_score
    if y_score.ndim != 2:
        raise ValueError(f"{task} y_score must be (samples, classes); got shape {y_score.shape}")
    n_classes = y_score.shape[1]
    if not np.isin(y_true, np.arange(n_classes)).all():
        raise ValueError(
            f"{task} y_true must hold class indices 0..{n_classes - 1} to match y_score's columns"
        )
    return y_true, y_score


def _mean_auc(targets: np.ndarray, scores: np.ndarray, what: str) -> float:
    """Mean ROC AUC over columns, skipping columns whose target is all 0 or all 1.

    sklearn raises on such a column, or returns NaN, which poisons the mean. A training run that
    evaluates a small validation set after every epoch must neither stop nor lose its
    best-model criterion, and counting the column as 0.5 or 0 would bias the mean, so the
    column is left out and reported.
    """
    aucs, skipped = [], []
    for i in range(targets.shape[1]):
        column = targets[:, i]
        if column.min() == column.max():
            skipped.append(i)
            continue
        aucs.append(roc_auc_score(column, scores[:, i]))
    if skipped:
        outcome = "the AUC is NaN" if not aucs else f"the AUC is the mean over the other {len(aucs)}"
        warnings.warn(
            f"{what} {skipped} left out of the AUC "
            f"(only one outcome among {len(targets)} samples); {outcome}",
            SkippedClassWarning,
            stacklevel=3,
        )
    return float(np.mean(aucs)) if aucs else float("nan")


def medmnist_auc(task: str, y_true, y_score) -> float:
    """ROC AUC with the Evaluator's per-task definition (see ``_DESCRIPTION``)."""
    y_true, y_score = _prepare(task, y_true, y_score)
    if task == "multi-label":
        return _mean_auc(y_true, y_score, "labels")
    if task == "binary":
        positive = y_score[:, -1] if y_score.ndim == 2 else y_score
        return _mean_auc(y_true[:, None], positive[:, None], "binary target")
    one_vs_rest = y_true[:, None] == np.arange(y_score.shape[1])[None, :]
    return _mean_auc(one_vs_rest.astype(np.int64), y_score, "classes")


def medmnist_acc(task: str, y_true, y_score) -> float:
    """Accuracy with the Evaluator's per-task definition (see ``_DESCRIPTION``)."""
    y_true, y_score = _prepare(task, y_true, y_score)
    if task == "multi-label":
        predicted = y_score > THRESHOLD
        return float(np.mean([accuracy_score(y_true[:, i], predicted[:, i]) for i in range(y_true.shape[1])]))
    if task == "binary":
        positive = y_score[:, -1] if y_score.ndim == 2 else y_score
        return float(accuracy_score(y_true, positive > THRESHOLD))
    return float(accuracy_score(y_true, np.argmax(y_score, axis=-1)))


def medmnist_scores(task: str, y_true, y_score) -> dict[str, float]:
    """Both numbers the MedMNIST papers report, under the names their tables use."""
    return {"auc": medmnist_auc(task, y_true, y_score), "acc": medmnist_acc(task, y_true, y_score)}


if not DEFINITIONS_ONLY:

    def _features(task: str) -> datasets.Features | list[datasets.Features]:
        """Input schema per task; float64 so that numbers match an in-memory computation exactly."""
        probabilities = datasets.List(datasets.Value("float64"))
        class_index = datasets.Value("int64")
        if task == "multi-label":
            return datasets.Features(predictions=probabilities, references=datasets.List(datasets.Value("int64")))
        if task == "binary":
            # A one-logit (sigmoid) model gives one number per sample; evaluate tries these in order.
            return [
                datasets.Features(predictions=datasets.Value("float64"), references=class_index),
                datasets.Features(predictions=probabilities, references=class_index),
            ]
        return datasets.Features(predictions=probabilities, references=class_index)


    @evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
    class MedMNISTMetrics(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            # Each task has its own input shape and definition, so there is no sensible default.
            if self.config_name not in TASKS:
                raise ValueError(
                    f"medmnist_metrics needs the task as config_name, one of {', '.join(TASKS)}; "
                    f"got {self.config_name!r}"
                )
            return evaluate.MetricInfo(
                description=_DESCRIPTION,
                citation=_CITATION,
                inputs_description=_KWARGS_DESCRIPTION,
                features=_features(self.config_name),
                homepage="https://medmnist.com/",
                codebase_urls=["https://github.com/MedMNIST/MedMNIST/blob/main/medmnist/evaluator.py"],
                reference_urls=["https://doi.org/10.1038/s41597-022-01721-8"],
            )

        def _compute(self, predictions, references) -> dict[str, float]:
            return medmnist_scores(self.config_name, references, predictions)
