"""The MedMNIST metrics: the medmnist Evaluator's definitions, checked against sklearn.

Every expected number is computed here, with sklearn, from the definition as written in
reference/baselines.md, never by calling hfmed twice. Where the Hub's ``roc_auc`` or ``accuracy``
(or a plausible sklearn default) would give another answer, both are computed to show the
difference is real on these inputs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

import hfmed.metrics as metrics
from hfmed.metrics import SkippedClassWarning

# --- fixed inputs --------------------------------------------------------------------------

BINARY_Y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
BINARY_P1 = np.array([0.1, 0.6, 0.8, 0.4, 0.3, 0.9, 0.55, 0.45])
BINARY_P = np.column_stack([1 - BINARY_P1, BINARY_P1])

MULTICLASS_Y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 2])
MULTICLASS_P = np.array(
    [
        [0.44, 0.48, 0.08],
        [0.46, 0.51, 0.03],
        [0.04, 0.05, 0.91],
        [0.19, 0.23, 0.58],
        [0.32, 0.37, 0.31],
        [0.59, 0.39, 0.02],
        [0.22, 0.25, 0.53],
        [0.01, 0.84, 0.15],
        [0.34, 0.65, 0.01],
        [0.02, 0.16, 0.82],
    ]
)  # no ties within a column or a row, so float32 rounding on the way through a model changes nothing

MULTILABEL_Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]])
MULTILABEL_P = np.array(
    [[0.8, 0.3, 0.2], [0.4, 0.7, 0.1], [0.6, 0.4, 0.3], [0.2, 0.1, 0.6], [0.7, 0.2, 0.4], [0.3, 0.6, 0.25]]
)

INPUTS = {
    "binary": (BINARY_Y, BINARY_P),
    "multi-class": (MULTICLASS_Y, MULTICLASS_P),
    "ordinal": (MULTICLASS_Y, MULTICLASS_P),
    "multi-label": (MULTILABEL_Y, MULTILABEL_P),
}


def one_vs_rest_mean_auc(y, p):
    return np.mean([roc_auc_score(y == i, p[:, i]) for i in range(p.shape[1])])


# --- binary --------------------------------------------------------------------------------


def test_binary_scores_the_last_column():
    result = metrics.compute("binary", BINARY_Y, BINARY_P)

    assert result["auc"] == pytest.approx(roc_auc_score(BINARY_Y, BINARY_P[:, -1]))
    assert result["acc"] == pytest.approx(accuracy_score(BINARY_Y, BINARY_P[:, -1] > 0.5))
    # Counted by hand: 13 of 16 positive/negative pairs ranked right; samples 1 and 3 misread.
    assert result == pytest.approx({"auc": 13 / 16, "acc": 6 / 8})


def test_binary_ignores_the_first_column():
    scrambled = BINARY_P.copy()
    scrambled[:, 0] = np.array([0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1])

    assert metrics.compute("binary", BINARY_Y, scrambled) == metrics.compute("binary", BINARY_Y, BINARY_P)


@pytest.mark.parametrize("shape", [(8,), (8, 1)])
def test_binary_with_one_probability_per_sample(shape):
    result = metrics.compute("binary", BINARY_Y, BINARY_P1.reshape(shape))

    assert result["auc"] == pytest.approx(roc_auc_score(BINARY_Y, BINARY_P1))
    assert result["acc"] == pytest.approx(accuracy_score(BINARY_Y, BINARY_P1 > 0.5))


def test_binary_rejects_more_than_two_columns():
    with pytest.raises(ValueError, match="binary y_score"):
        metrics.compute("binary", MULTICLASS_Y % 2, MULTICLASS_P)


# --- multi-class and ordinal ---------------------------------------------------------------


@pytest.mark.parametrize("task", ["multi-class", "ordinal"])
def test_multiclass_auc_is_the_unweighted_one_vs_rest_mean(task):
    result = metrics.compute(task, MULTICLASS_Y, MULTICLASS_P)

    assert result["auc"] == pytest.approx(one_vs_rest_mean_auc(MULTICLASS_Y, MULTICLASS_P))
    assert result["acc"] == pytest.approx(accuracy_score(MULTICLASS_Y, MULTICLASS_P.argmax(axis=1)))
    assert result["acc"] == pytest.approx(0.8)


def test_multiclass_auc_is_not_sklearns_one_vs_one_or_weighted_average():
    ours = metrics.compute("multi-class", MULTICLASS_Y, MULTICLASS_P)["auc"]
    one_vs_one = roc_auc_score(MULTICLASS_Y, MULTICLASS_P, multi_class="ovo")
    weighted = roc_auc_score(MULTICLASS_Y, MULTICLASS_P, multi_class="ovr", average="weighted")
    macro_one_vs_rest = roc_auc_score(MULTICLASS_Y, MULTICLASS_P, multi_class="ovr", average="macro")

    assert ours == pytest.approx(macro_one_vs_rest)
    assert ours != pytest.approx(one_vs_one)
    assert ours != pytest.approx(weighted)


def test_ordinal_is_scored_like_multiclass():
    assert metrics.compute("ordinal", MULTICLASS_Y, MULTICLASS_P) == metrics.compute(
        "multi-class", MULTICLASS_Y, MULTICLASS_P
    )


def test_labels_as_stored_in_the_npz_files_are_squeezed():
    """The release files hold labels as (N, 1) uint8; the Evaluator squeezes them."""
    as_in_npz = MULTICLASS_Y.reshape(-1, 1).astype(np.uint8)

    assert metrics.compute("multi-class", as_in_npz, MULTICLASS_P) == metrics.compute(
        "multi-class", MULTICLASS_Y, MULTICLASS_P
    )


def test_a_single_sample_keeps_its_class_axis():
    """np.squeeze would read one sample's three scores as three samples."""
    with pytest.warns(SkippedClassWarning):  # one sample: no class has both outcomes
        result = metrics.compute("multi-class", [[2]], [[0.1, 0.2, 0.7]])

    assert result["acc"] == 1.0
    assert np.isnan(result["auc"])


def test_class_indices_outside_the_score_columns_are_rejected():
    with pytest.raises(ValueError, match="0..2"):
        metrics.compute("multi-class", [0, 1, 3], MULTICLASS_P[:3])


# --- multi-label ---------------------------------------------------------------------------


def test_multilabel_acc_is_the_mean_of_per_label_accuracies_not_exact_match():
    result = metrics.compute("multi-label", MULTILABEL_Y, MULTILABEL_P)
    predicted = MULTILABEL_P > 0.5
    per_label = np.mean([accuracy_score(MULTILABEL_Y[:, i], predicted[:, i]) for i in range(3)])
    exact_match = accuracy_score(MULTILABEL_Y, predicted)  # what sklearn and the Hub's accuracy give

    assert result["acc"] == pytest.approx(per_label)
    assert result["acc"] != pytest.approx(exact_match)
    assert (per_label, exact_match) == pytest.approx((15 / 18, 3 / 6))


def test_multilabel_auc_is_the_mean_over_labels():
    result = metrics.compute("multi-label", MULTILABEL_Y, MULTILABEL_P)

    expected = np.mean([roc_auc_score(MULTILABEL_Y[:, i], MULTILABEL_P[:, i]) for i in range(3)])
    assert result["auc"] == pytest.approx(expected)


def test_multilabel_needs_one_score_per_label():
    with pytest.raises(ValueError, match="one score per label"):
        metrics.compute("multi-label", MULTILABEL_Y, MULTILABEL_P[:, :2])


# --- classes absent from a small evaluation set --------------------------------------------


def test_an_absent_class_is_left_out_of_the_auc_mean():
    y, p = np.array([0, 1, 0, 1, 1]), MULTICLASS_P[:5]

    with pytest.warns(SkippedClassWarning, match=r"classes \[2\]"):
        result = metrics.compute("multi-class", y, p)

    expected_auc = np.mean([roc_auc_score(y == i, p[:, i]) for i in (0, 1)])
    assert result["auc"] == pytest.approx(expected_auc)
    assert result["acc"] == pytest.approx(accuracy_score(y, p.argmax(axis=1)))


def test_the_evaluators_plain_mean_has_no_answer_for_an_absent_class():
    """Why the skip exists: for class 2 sklearn raises (older releases) or returns NaN (recent ones)."""
    y, p = np.array([0, 1, 0, 1, 1]), MULTICLASS_P[:5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            plain_mean = one_vs_rest_mean_auc(y, p)
        except ValueError:
            plain_mean = float("nan")
        ours = metrics.compute("multi-class", y, p)["auc"]

    assert np.isnan(plain_mean)
    assert not np.isnan(ours)


def test_a_constant_label_is_left_out_of_the_multilabel_auc_mean():
    y = MULTILABEL_Y.copy()
    y[:, 1] = 0

    with pytest.warns(SkippedClassWarning, match=r"labels \[1\]"):
        result = metrics.compute("multi-label", y, MULTILABEL_P)

    expected_auc = np.mean([roc_auc_score(y[:, i], MULTILABEL_P[:, i]) for i in (0, 2)])
    assert result["auc"] == pytest.approx(expected_auc)


@pytest.mark.parametrize(
    ("task", "y", "p"),
    [
        ("binary", [1, 1, 1], BINARY_P[:3]),
        ("multi-class", [2, 2, 2], MULTICLASS_P[:3]),
        ("multi-label", [[1, 0], [1, 0]], [[0.2, 0.9], [0.7, 0.1]]),
    ],
)
def test_no_evaluable_class_gives_nan_auc_and_a_real_acc(task, y, p):
    with pytest.warns(SkippedClassWarning, match="NaN"):
        result = metrics.compute(task, y, p)

    assert np.isnan(result["auc"])
    assert 0.0 <= result["acc"] <= 1.0


def test_no_warning_when_every_class_is_present():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for task, (y, p) in INPUTS.items():
            metrics.compute(task, y, p)


@pytest.mark.parametrize("bad", [dict(task="multiclass"), dict(y=[]), dict(y=MULTICLASS_Y[:4])])
def test_bad_input_is_a_value_error(bad):
    args = {"task": "multi-class", "y": MULTICLASS_Y, "p": MULTICLASS_P, **bad}
    if len(args["y"]) == 0:
        args["p"] = np.empty((0, 3))
    with pytest.raises(ValueError):
        metrics.compute(args["task"], args["y"], args["p"])


# --- logits to probabilities ---------------------------------------------------------------


@pytest.mark.parametrize("task", ["multi-class", "ordinal", "binary"])
def test_softmax_for_single_label_tasks(task):
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    if task == "binary":
        logits = logits[:, :2]  # two logits: softmax, whose last column is sigmoid(l1 - l0)

    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert metrics.scores_from_logits(task, logits) == pytest.approx(expected)


def test_sigmoid_for_multilabel_and_for_a_single_binary_logit():
    logits = np.array([[-2.0, 0.0, 3.0]])
    expected = 1 / (1 + np.exp(-logits))

    assert metrics.scores_from_logits("multi-label", logits) == pytest.approx(expected)
    one_logit_per_sample = logits.reshape(-1, 1)
    assert metrics.scores_from_logits("binary", one_logit_per_sample) == pytest.approx(expected.reshape(-1, 1))
    assert metrics.scores_from_logits("binary", logits.ravel()) == pytest.approx(expected.ravel())


def test_extreme_logits_neither_overflow_nor_give_nan():
    float32_max = float(np.finfo(np.float32).max)
    logits = np.array([[1000.0, -1000.0, 0.0], [-float32_max, float32_max, 0.0]])

    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the answer
        softmax = metrics.scores_from_logits("multi-class", logits)
        sigmoid = metrics.scores_from_logits("multi-label", logits)

    assert softmax == pytest.approx(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert sigmoid == pytest.approx(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]))


# --- transformers Trainer ------------------------------------------------------------------


def test_trainer_callable_scores_an_eval_prediction():
    from transformers import EvalPrediction

    logits = np.log(MULTICLASS_P).astype(np.float32)  # softmax of log p is p
    compute_metrics = metrics.compute_metrics_for_trainer("multi-class")

    result = compute_metrics(EvalPrediction(predictions=logits, label_ids=MULTICLASS_Y))

    assert set(result) == {"auc", "acc"}
    assert result["auc"] == pytest.approx(one_vs_rest_mean_auc(MULTICLASS_Y, MULTICLASS_P))
    assert result["acc"] == pytest.approx(accuracy_score(MULTICLASS_Y, MULTICLASS_P.argmax(axis=1)))


def test_trainer_callable_takes_float_multilabel_targets_and_tuple_outputs():
    from transformers import EvalPrediction

    logits = np.log(MULTILABEL_P / (1 - MULTILABEL_P))  # sigmoid of the logit of p is p
    compute_metrics = metrics.compute_metrics_for_trainer("multi-label")
    hidden_states = np.zeros((6, 4))

    result = compute_metrics(
        EvalPrediction(predictions=(logits, hidden_states), label_ids=MULTILABEL_Y.astype(np.float32))
    )

    assert result == pytest.approx(metrics.compute("multi-label", MULTILABEL_Y, MULTILABEL_P))
    predicted = MULTILABEL_P > 0.5
    per_label = [accuracy_score(MULTILABEL_Y[:, i], predicted[:, i]) for i in range(3)]
    assert result["acc"] == pytest.approx(np.mean(per_label))


def test_trainer_evaluate_reports_auc_and_acc_over_the_whole_set(tmp_path):
    """The Trainer gathers every batch's logits first, so the AUC is the whole set's, as published."""
    torch = pytest.importorskip("torch")
    from transformers import Trainer, TrainingArguments

    class GivesBackItsInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def forward(self, logits, labels=None):
            return {"loss": self.unused * 0, "logits": logits + self.unused}

    rows = [
        {"logits": torch.tensor(np.log(p), dtype=torch.float32), "labels": int(y)}
        for p, y in zip(MULTICLASS_P, MULTICLASS_Y)
    ]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True)
    trainer = Trainer(
        model=GivesBackItsInput(),
        args=args,
        eval_dataset=rows,
        compute_metrics=metrics.compute_metrics_for_trainer("multi-class"),
    )

    result = trainer.evaluate()

    assert result["eval_auc"] == pytest.approx(one_vs_rest_mean_auc(MULTICLASS_Y, MULTICLASS_P), abs=1e-6)
    assert result["eval_acc"] == pytest.approx(0.8)


# --- the evaluate module, loaded by path with no network -----------------------------------

_OFFLINE_SCRIPT = r"""
import json, socket, sys
import numpy as np

def no_network(*args, **kwargs):
    raise OSError("network use during an offline metric load")
socket.socket.connect = no_network
socket.create_connection = no_network

inputs = json.loads(sys.argv[2])
out = {"by_path": {}, "by_hfmed": {}, "in_two_batches": {}}

# The module file must stand alone: evaluate imports its own copy, hfmed is not importable.
sys.modules["hfmed"] = None
import evaluate
for task, (y, p) in inputs.items():
    metric = evaluate.load(sys.argv[1], config_name=task, keep_in_memory=True)
    out["by_path"][task] = metric.compute(references=y, predictions=p)
try:
    evaluate.load(sys.argv[1], keep_in_memory=True)
except ValueError as error:
    out["no_task"] = str(error)
del sys.modules["hfmed"]

import hfmed.metrics
for task, (y, p) in inputs.items():
    metric = hfmed.metrics.load(task, keep_in_memory=True)
    out["by_hfmed"][task] = metric.compute(references=y, predictions=np.asarray(p))
    half = len(y) // 2
    metric.add_batch(references=y[:half], predictions=p[:half])
    metric.add_batch(references=y[half:], predictions=p[half:])
    out["in_two_batches"][task] = metric.compute()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One fresh interpreter, so HF_HUB_OFFLINE and an empty cache hold from evaluate's import on."""
    home = tmp_path_factory.mktemp("hf_home")
    repo_root = Path(metrics.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(home),
        "HF_MODULES_CACHE": str(home / "modules"),
        "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")]),
    }
    inputs = {task: (y.tolist(), p.tolist()) for task, (y, p) in INPUTS.items()}
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, str(metrics.MODULE_DIR), json.dumps(inputs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("task", list(INPUTS))
def test_evaluate_load_by_path_offline_gives_the_same_numbers(offline_run, task):
    expected = metrics.compute(task, *INPUTS[task])

    assert offline_run["by_path"][task] == expected
    assert offline_run["by_hfmed"][task] == expected
    assert offline_run["in_two_batches"][task] == expected


def test_evaluate_module_without_a_task_names_the_choices(offline_run):
    assert "config_name" in offline_run["no_task"]
    assert all(task in offline_run["no_task"] for task in metrics.TASKS)


def test_evaluate_module_stands_alone_and_cites_medmnist_v2():
    """evaluate imports its own copy of the file, where hfmed may not be importable."""
    source = (metrics.MODULE_DIR / "medmnist_metrics.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0] if node.level == 0 else ".")

    assert imported <= {"__future__", "warnings", "datasets", "evaluate", "numpy", "sklearn"}
    assert "Scientific Data" in source and "Yang, Jiancheng" in source
