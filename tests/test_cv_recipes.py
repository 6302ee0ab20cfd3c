"""benchmarks/cv_recipes.py: every recipe on every fold, ranked by mean fold AUC, resumable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hfmed.loading_scripts.medmnist import MedMNIST

from hfmed import metrics
from hfmed.writer import build_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import cv_recipes  # noqa: E402

QUICK = [
    "--subset",
    "breastmnist",
    "--arch",
    "resnet",
    "--arch_size",
    "nano",
    "--num_train_epochs",
    "1",
    "--per_device_train_batch_size",
    "8",
    "--disable_tqdm",
    "true",
]


def test_recipes_are_run_on_every_fold_summarized_and_resumed(small_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "hfmed-cache"))
    data = tmp_path / "medmnist"
    build_config(
        MedMNIST("breastmnist", small_npz("breastmnist", n={"train": 24, "val": 11, "test": 13}), unofficial=True),
        data,
        progress=False,
    )
    work, summary = tmp_path / "cv", tmp_path / "cv.json"
    argv = [
        "--work",
        str(work),
        "--folds",
        "2",
        "--parallel",
        "2",
        "--json",
        str(summary),
        "--recipe",
        "plain=",
        "--recipe",
        "wd=--weight_decay 0.5",
        "--",
        "--dataset",
        str(data),
        *QUICK,
    ]
    assert cv_recipes.main(argv) == 0

    rows = {r["recipe"]: r for r in json.loads(summary.read_text())["recipes"]}
    assert set(rows) == {"plain", "wd"} and rows["wd"]["flags"] == "--weight_decay 0.5"
    for name, row in rows.items():
        labels, scores = [], []
        for fold in range(2):
            results = json.loads((work / name / f"fold{fold}" / "results.json").read_text())
            assert results["cross_validation"]["fold"] == fold and results["test"] is None
            assert results["arguments"]["TrainingArguments"]["seed"] == fold  # paired: fold i, seed i, every recipe
            assert row["fold_auc"][fold] == pytest.approx(results["validation"]["auc"])
            with np.load(work / name / f"fold{fold}" / "predictions.npz") as saved:
                labels.append(saved["validation_labels"])
                scores.append(saved["validation_scores"])
        assert row["mean_auc"] == pytest.approx(np.mean(row["fold_auc"]))
        assert sum(len(y) for y in labels) == 24 + 11  # the folds cover train and validation, once
        assert row["pooled_auc"] == pytest.approx(
            metrics.compute("binary", np.concatenate(labels), np.concatenate(scores))["auc"]
        )
    ranked = json.loads(summary.read_text())["recipes"]
    assert ranked[0]["mean_auc"] >= ranked[1]["mean_auc"]

    # A second call finds every results.json and trains nothing again.
    stamps = {p: p.stat().st_mtime_ns for p in work.glob("*/fold*/results.json")}
    assert cv_recipes.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in work.glob("*/fold*/results.json")} == stamps


@pytest.mark.parametrize("extra", [["--seed", "3"], ["--cv_fold", "1"], ["--output_dir", "x"]])
def test_flags_the_script_sets_per_run_are_refused(tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as exit_:
        cv_recipes.main(["--work", str(tmp_path / "cv"), "--recipe", "a=", "--", *QUICK, *extra])
    assert exit_.value.code == 2 and "set per run by this script" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()


def _fold_runs(folder: Path, positive: dict[int, list[float]], labels: list[int], test: bool = False) -> Path:
    for fold, p in positive.items():
        run = folder / f"fold{fold}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"task_type": "binary", "cross_validation": {"fold": fold}}))
        arrays = {"validation_labels": np.array(labels), "validation_scores": np.stack([1 - np.array(p), p], 1)}
        np.savez(run / "predictions.npz", **arrays, **({"test_scores": arrays["validation_scores"]} if test else {}))
    return folder


def test_fold_mixes_scores_each_set_and_each_average_on_the_shared_folds(tmp_path, capsys):
    import fold_mixes

    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    a = _fold_runs(tmp_path / "a", {0: [0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.35, 0.25]}, labels)  # AUC 0.8125
    b = _fold_runs(tmp_path / "b", {0: [0.1, 0.2, 0.3, 0.4, 0.35, 0.25, 0.9, 0.8], 1: [0.5] * 8}, labels)
    fold_mixes.main([f"a={a}", f"b={b}"])
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "| mix | fold 0 | mean |"  # b's fold 1 is not a's: left out
    assert rows[2:] == ["| a | 0.812 | 0.812 |", "| b | 0.812 | 0.812 |", "| a + b | 1.000 | 1.000 |"]
    with pytest.raises(SystemExit) as exit_:
        fold_mixes.main([f"a={a}", f"t={_fold_runs(tmp_path / 't', {0: [0.5] * 8}, labels, test=True)}"])
    assert exit_.value.code == 2 and "holds test predictions" in capsys.readouterr().err


def test_fold_curves_scores_the_best_epoch_the_last_and_the_tail_on_the_shared_folds(tmp_path, capsys):
    import fold_curves

    def runs(folder: Path, curves: dict[int, list[float]]) -> Path:
        for fold, aucs in curves.items():
            run = folder / f"fold{fold}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps({"cross_validation": {"fold": fold}}))
            history = []
            for epoch, auc in enumerate(aucs, 1):  # a training log entry between evaluations, as the Trainer writes
                history += [{"loss": 0.5, "epoch": epoch}, {"eval_auc": auc, "eval_loss": 0.4, "epoch": epoch}]
            (run / "trainer_state.json").write_text(json.dumps({"log_history": history}))
        return folder

    early = runs(tmp_path / "early", {0: [0.7, 0.95, 0.8, 0.8], 1: [0.9, 0.85, 0.8, 0.7], 2: [0.5] * 4})
    late = runs(tmp_path / "late", {0: [0.6, 0.7, 0.8, 0.9], 1: [0.6, 0.7, 0.9, 0.9]})
    fold_curves.main([f"early={early}", f"late={late}", "--last", "2"])
    rows = capsys.readouterr().out.splitlines()
    # fold 2 is early's only, so it is left out
    assert rows[0] == "| set | best epoch | last epoch | mean of the last 2 | best epochs of folds 0, 1 |"
    # early: best (0.95 + 0.9) / 2, last (0.8 + 0.7) / 2, tail (0.8 + 0.75) / 2, peaks at epochs 2 and 1
    assert rows[2:] == ["| early | 0.925 | 0.750 | 0.775 | 2 1 |", "| late | 0.900 | 0.900 | 0.875 | 4 3 |"]

    (early / "fold0" / "results.json").write_text(json.dumps({"task_type": "binary"}))  # an official-split run
    only_two = runs(tmp_path / "only_two", {2: [0.5] * 4})
    for sets, error in [
        ([f"early={early}"], "is not a cross-validation run"),
        ([f"empty={tmp_path / 'nothing'}"], "holds no finished fold<i> runs"),
        ([f"late={late}", f"only_two={only_two}"], "no fold in common"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            fold_curves.main(sets)
        message = capsys.readouterr().err
        assert exit_.value.code == 2 and error in message and len(message.splitlines()) == 1
