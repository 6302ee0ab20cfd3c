"""MedMNIST metrics for in-process use, for ``evaluate``, and for the transformers Trainer.

The definitions live in one file, ``medmnist_metrics/medmnist_metrics.py``, because ``evaluate``
insists on a self-contained script it can copy and import by itself. This package loads that same
file by path, so ``compute`` here and ``evaluate.load(...).compute`` run identical code.
``evaluate.load("accuracy")`` and ``"roc_auc"`` would fetch from the Hub (which fails offline) and
define ACC and AUC differently from the MedMNIST papers; see the module file for the differences.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from types import ModuleType

    import evaluate
    from numpy.typing import ArrayLike
    from transformers import EvalPrediction

#: The evaluate module folder; ``evaluate.load(str(MODULE_DIR), config_name=task)`` loads it.
MODULE_DIR = Path(__file__).parent / "medmnist_metrics"
_MODULE_FILE = MODULE_DIR / "medmnist_metrics.py"


def _load_definitions() -> ModuleType:
    name = f"{__name__}._medmnist_metrics"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered before running, as a normal import does
    spec.loader.exec_module(module)
    return module


_definitions = _load_definitions()
TASKS: tuple[str, ...] = _definitions.TASKS
SkippedClassWarning = _definitions.SkippedClassWarning

__all__ = [
    "MODULE_DIR",
    "TASKS",
    "SkippedClassWarning",
    "compute",
    "compute_metrics_for_trainer",
    "load",
    "scores_from_logits",
]


def compute(task: str, y_true: ArrayLike, y_score: ArrayLike) -> dict[str, float]:
    """``{"auc": ..., "acc": ...}`` by the medmnist Evaluator's definitions, in memory.

    ``y_score`` holds probabilities (use :func:`scores_from_logits` on model outputs). A class that
    is absent from ``y_true`` (or present in every sample) has no ROC AUC: it is left out of the AUC
    mean with a :class:`SkippedClassWarning`, and the AUC is NaN if no class is left. Under the
    Evaluator sklearn would raise, or make the whole mean NaN; a small validation set must not
    stop a training run or blank its AUC.
    """
    return _definitions.medmnist_scores(task, y_true, y_score)


def scores_from_logits(task: str, logits: ArrayLike) -> np.ndarray:
    """Probabilities as the MedMNIST definitions expect them, computed in float64.

    Softmax over the last axis, except where each output is its own yes/no question: sigmoid for
    multi-label, and for a binary model with a single logit (softmax over one column is always 1).
    Both forms are written so that large logits neither overflow nor turn into NaN.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    logits = np.asarray(logits, dtype=np.float64)
    if task == "multi-label" or (task == "binary" and (logits.ndim == 1 or logits.shape[-1] == 1)):
        return np.exp(-np.logaddexp(0.0, -logits))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def load(task: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """The ``evaluate`` module for ``task``, loaded from the file inside this package.

    Loading by path needs no network, so it works with ``HF_HUB_OFFLINE=1``. ``kwargs`` go to
    ``evaluate.load`` (``keep_in_memory``, ``cache_dir``, ``process_id``/``num_process`` for
    distributed evaluation).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    import evaluate

    return evaluate.load(str(MODULE_DIR), config_name=task, **kwargs)


def compute_metrics_for_trainer(task: str) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer``: logits and labels in, AUC and ACC out.

    The Trainer gathers all evaluation logits first, so this scores the whole evaluation set at
    once, as the published numbers do (AUC does not average over batches). Multi-label
    ``label_ids`` are the float 0/1 targets the BCE loss was given and are read as integers.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]  # models that also return hidden states or attentions put logits first
        labels = eval_prediction.label_ids
        if labels is None:
            raise ValueError("compute_metrics needs labels: the evaluation dataset has no label column")
        labels = np.asarray(labels)
        if task == "multi-label":
            labels = np.rint(labels).astype(np.int64)
        return compute(task, labels, scores_from_logits(task, logits))

    return compute_metrics
