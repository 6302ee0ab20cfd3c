"""hfmed benchmark end to end on a tiny generated build: search, select, final seeds, one test read,
resume, budget cuts, and the decathlon report."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from hfmed.loading_scripts.medmnist import MedMNIST

from hfmed import benchmark, cli
from hfmed.benchmark import decathlon, final, protocol, space
from hfmed.errors import UserError
from hfmed.writer import build_config

ROOT = Path(__file__).resolve().parent.parent
TINY_SPACE = (
    space.Candidate("plain", ("--arch", "resnet", "--arch_size", "small")),
    space.Candidate("wd", ("--arch", "resnet", "--arch_size", "small", "--weight_decay", "0.5")),
)
QUICK = ("--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16")
OPTIONS = dict(space=TINY_SPACE, epoch_tiers=(1,), fold_tiers=(2,), seed_tiers=(2,), parallel=2, extra_flags=QUICK)


@pytest.fixture
def tiny_build(small_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "hfmed-cache"))
    data = tmp_path / "medmnist"
    npz = small_npz("breastmnist", n={"train": 24, "val": 11, "test": 13})
    build_config(MedMNIST("breastmnist", npz, unofficial=True), data, progress=False)
    return data


def test_search_selects_on_folds_then_reads_test_once_and_resumes(tiny_build, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    target = benchmark.Target("breastmnist", dataset=str(tiny_build))
    calls, test_readers = [], []
    evaluate, load = final.evaluate, np.load
    monkeypatch.setattr(final, "evaluate", lambda *a, **k: calls.append(a) or evaluate(*a, **k))

    def spying_load(path, *args, **kwargs):  # who, in this process, opens a file holding test predictions
        opened = load(path, *args, **kwargs)
        if any(name.startswith("test_") for name in getattr(opened, "files", [])):
            test_readers.append((Path(inspect.stack()[1].filename).name, Path(path).parent.name))
        return opened

    monkeypatch.setattr(np, "load", spying_load)
    done = benchmark.run_subset(target, 1e6, out, **OPTIONS)
    monkeypatch.setattr(np, "load", load)
    assert sorted(test_readers) == [
        ("final.py", "seed100"),
        ("final.py", "seed101"),
    ]  # once per member, by the evaluation only

    results, record = json.loads((out / "results.json").read_text()), json.loads((out / "search.json").read_text())
    assert results["test"]["auc"] == pytest.approx(done.results["test"]["auc"]) and 0 <= results["test"]["acc"] <= 1
    assert record["plan"] == {
        **record["plan"],
        "epochs": 1,
        "folds": 2,
        "candidates": ["plain", "wd"],
        "seeds": [100, 101],
        "cut": [],
    }
    # Search runs: cross-validation folds, no test figures and no test predictions.
    for name in ("plain", "wd"):
        for fold in (0, 1):
            run = out / "search" / name / f"fold{fold}"
            r = json.loads((run / "results.json").read_text())
            assert (
                r["test"] is None
                and r["cross_validation"]["fold"] == fold
                and r["arguments"]["TrainingArguments"]["seed"] == fold
            )
            with np.load(run / "predictions.npz") as npz:
                assert all(k.startswith("validation_") for k in npz.files)
            assert record["selection"]["fold_auc"][name][str(fold)] == pytest.approx(r["validation"]["auc"])
    # The winner is recorded before the official split is trained on, and is what the final runs train.
    sel, fin = record["selection"], record["final"]
    assert sel["winner"] == sel["ranking"][0]["candidate"] == fin["winner"]
    assert sel["decided_after_seconds"] <= fin["started_after_seconds"]
    flags = " ".join(space.by_name(TINY_SPACE, sel["winner"]).flags)
    for seed, member in zip((100, 101), fin["members"]):
        command = json.loads((out / member / "results.json").read_text())["command"]
        assert flags in command and f"--seed {seed}" in command and "--cv_fold" not in command
    # The ensemble is the mean of the seeds' probabilities, scored once.
    with (
        np.load(out / "final/seed100/predictions.npz") as a,
        np.load(out / "final/seed101/predictions.npz") as b,
        np.load(out / "predictions.npz") as e,
    ):
        np.testing.assert_allclose(e["test_scores"], (a["test_scores"] + b["test_scores"]) / 2)
    assert len(calls) == 1
    assert results["test"]["auc_95ci"][0] <= results["test"]["auc"] <= results["test"]["auc_95ci"][1]
    assert results["clinical"]["bootstrap_95"]["resamples"] == 1000 and (out / "reliability.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "Google AutoML Vision" in md and "MedMNIST v1" in md and "Chosen: **" in md

    # Rerun: nothing is trained or evaluated again.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    benchmark.run_subset(target, 1e6, out, **OPTIONS)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamps and len(calls) == 1

    # The decathlon report: this run ranked among every published BreastMNIST row.
    assert cli.main(["benchmark", "--report", str(out)]) == 0
    table = (out / "decathlon.md").read_text()
    assert "MedMNIST v1 Classification Decathlon" in table and "MedMNIST v2 2D" in table and "MedMNIST+" in table
    ranked = {t["key"]: t for t in decathlon.tables({"breastmnist": results})}
    ours = ranked["medmnist_v1"]["methods"][0]
    auc, acc = round(results["test"]["auc"], 3), round(results["test"]["acc"], 3)
    rows = json.loads(json.dumps([r for r in ranked["medmnist_v1"]["methods"][1:]]))
    auc_rank = (
        1
        + sum(r["results"]["breastmnist"]["auc"] > auc for r in rows)
        + sum(r["results"]["breastmnist"]["auc"] == auc for r in rows) / 2
    )
    acc_rank = (
        1
        + sum(r["results"]["breastmnist"]["acc"] > acc for r in rows)
        + sum(r["results"]["breastmnist"]["acc"] == acc for r in rows) / 2
    )
    assert ours["ranks"]["breastmnist"] == pytest.approx((auc_rank + acc_rank) / 2) == ours["average_rank"]
    assert (out / "decathlon.png").stat().st_size > 0


def test_a_budget_too_small_for_a_search_skips_it_and_says_so(tiny_build, tmp_path):
    out = tmp_path / "bench"
    done = benchmark.run_subset(benchmark.Target("breastmnist", dataset=str(tiny_build)), 30, out, **OPTIONS)
    plan = done.record["plan"]
    assert plan["folds"] == 0 and plan["candidates"] == ["plain"] and plan["seeds"] == [100] and plan["epochs"] == 1
    assert any("not searched" in c for c in plan["cut"]) and any("over budget" in c for c in plan["cut"])
    assert not (out / "search").exists() and done.record["selection"]["winner"] == "plain"
    assert "cut by the budget" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["benchmark", "--subset", "breastmnist", "--out", "x"], "needs --subset, --budget and --out"),
        (["benchmark", "--subset", "breastmnist", "--budget", "soon", "--out", "x"], "is not a duration"),
        (["benchmark", "--report", "nowhere"], "is not a folder"),
        (["benchmark", "--report", ".", "--subset", "breastmnist"], "give it alone"),
    ],
)
def test_command_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "x").exists()


def test_an_unrelated_out_folder_is_refused_untouched(tiny_build, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="holds no search.json"):
        benchmark.run_subset(benchmark.Target("breastmnist", dataset=str(tiny_build)), 60, out, **OPTIONS)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def _fake_trainer(fold_auc: dict[str, list[float]], wall_seconds: float, started: list[str]):
    """A stand-in for scheduler.run_jobs that writes what train_hf.py would, instantly: search runs
    get the given fold AUCs and validation predictions only; final runs get test predictions too."""
    rng = np.random.default_rng(0)

    def run_jobs(jobs, pool, deadline=None, poll=0.5):
        status = {}
        for job in jobs:
            if job.done:
                status[job.out] = "kept"
                continue
            started.append(str(job.out))
            job.out.mkdir(parents=True)
            cv = "--cv_fold" in job.args
            results = {
                "collection": "medmnist",
                "config": "breastmnist",
                "subset": "breastmnist",
                "task": "label",
                "task_type": "binary",
                "num_labels": 2,
                "label_names": ["malignant", "benign"],
                "image_size": 28,
                "wall_time_seconds": wall_seconds,
                "command": " ".join(job.args),
                "best_validation_auc": 0.9,
            }
            y = np.array([0, 1] * 10)
            arrays = {"validation_labels": y, "validation_scores": rng.random((20, 2))}
            if cv:
                fold = int(job.args[job.args.index("--cv_fold") + 1])
                results |= {
                    "cross_validation": {"fold": fold},
                    "test": None,
                    "validation": {"auc": fold_auc[job.out.parent.name][fold], "acc": 0.5},
                }
            else:
                arrays |= {"test_labels": y, "test_scores": rng.random((20, 2))}
                results |= {
                    "cross_validation": None,
                    "validation": {"auc": 0.9, "acc": 0.8},
                    "test": {"auc": 0.5, "acc": 0.5},
                }
            np.savez(job.out / "predictions.npz", **arrays)
            (job.out / "results.json").write_text(json.dumps(results))
            status[job.out] = "done"
        return status

    return run_jobs


SPACE3 = TINY_SPACE + (space.Candidate("big", ("--arch", "resnet", "--arch_size", "base"), cost=3.0),)
FAKE = dict(space=SPACE3, epoch_tiers=(1,), fold_tiers=(3,), seed_tiers=(2,), parallel=2)


def test_a_hopeless_candidate_is_dropped_after_two_folds(tiny_build, tmp_path, monkeypatch):
    started: list[str] = []
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.70, 0.72, 0.99]}
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, started))
    done = benchmark.run_subset(benchmark.Target("breastmnist", dataset=str(tiny_build)), 1e9, tmp_path / "b", **FAKE)
    record = done.record
    assert set(record["dropped"]) == {"big"} and record["dropped"]["big"]["after_folds"] == [0, 1]
    assert not (tmp_path / "b/search/big/fold2").exists()  # its third fold (which would have been 0.99) never ran
    assert record["selection"]["winner"] == "wd" and record["selection"]["folds_compared"] == [0, 1, 2]
    assert "dropped as hopeless: big" in (tmp_path / "b/results.md").read_text()


def test_a_round_that_no_longer_fits_the_budget_is_skipped_and_recorded(tiny_build, tmp_path, monkeypatch):
    started: list[str] = []
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.82, 0.83, 0.84]}
    # Runs take far longer than estimated: after fold 0 the next round would eat the final seeds' time.
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 2e4, started))
    budget_seconds = 3.5e4
    done = benchmark.run_subset(
        benchmark.Target("breastmnist", dataset=str(tiny_build)),
        budget_seconds,
        tmp_path / "b",
        **{**FAKE, "parallel": 1},
    )
    record = done.record
    assert record["plan"]["folds"] == 3 and [r["folds"] for r in record["rounds"]] == [[0]]
    assert record["skipped"][0]["folds"] == [1, 2] and "final model" in record["skipped"][0]["why"]
    assert record["selection"]["folds_compared"] == [0] and record["selection"]["winner"] == "wd"
    assert record["slowdown"] > 100
    # The final seeds, re-estimated with that slowdown, no longer fit either: one is kept, the other recorded.
    assert record["final"]["seeds"] == [100] and record["skipped"][-1]["final_seed"] == 101
    assert sum("final" in s for s in started) == 1 and len(started) == 4


def test_free_slots_take_several_folds_per_round(tiny_build, tmp_path, monkeypatch):
    started: list[str] = []
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86]}
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, started))
    options = {**FAKE, "space": TINY_SPACE, "parallel": 4}
    done = benchmark.run_subset(
        benchmark.Target("breastmnist", dataset=str(tiny_build)), 1e9, tmp_path / "b", **options
    )
    assert [r["folds"] for r in done.record["rounds"]] == [[0, 1], [2]] and len(done.record["slots"]) == 4
    assert done.record["selection"]["folds_compared"] == [0, 1, 2] and done.record["dropped"] == {}
