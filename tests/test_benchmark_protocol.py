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
from hfmed.benchmark import budget, decathlon, final, protocol, selection, space
from hfmed.errors import UserError
from hfmed.writer import build_config

ROOT = Path(__file__).resolve().parent.parent
TINY_SPACE = (
    space.Candidate("plain", ("--arch", "resnet", "--arch_size", "small")),
    space.Candidate("wd", ("--arch", "resnet", "--arch_size", "small", "--weight_decay", "0.5")),
)
QUICK = ("--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16")
# final_seeds: two, so that time left over does not grow the ensemble (a test of its own does that).
OPTIONS = dict(
    space=TINY_SPACE,
    epoch_tiers=(1,),
    fold_tiers=(2,),
    seed_tiers=(2,),
    final_seeds=(100, 101),
    search_min_epochs=1,
    parallel=2,
    extra_flags=QUICK,
)


@pytest.fixture
def tiny_build(small_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "hfmed-cache"))
    data = tmp_path / "medmnist"
    npz = small_npz("breastmnist", n={"train": 24, "val": 11, "test": 13})
    build_config(MedMNIST("breastmnist", npz, unofficial=True), data, progress=False)
    return data


def _assert_trained_and_evaluated_with(out: Path, seed: int, member: str, recipe: str) -> None:
    """A final seed trained ``recipe`` on the official split, and its evaluation loaded that model."""
    trained = json.loads((out / member / "results.json").read_text())
    command = trained["command"]
    assert " ".join(space.by_name(TINY_SPACE, recipe).flags) in command and f"--seed {seed}" in command
    assert "--cv_fold" not in command
    assert trained["arguments"]["TrainingArguments"]["weight_decay"] == (0.5 if recipe == "wd" else 0.0)
    evaluation = json.loads((out / "evaluation" / f"seed{seed}" / "results.json").read_text())
    assert f"--model {(out / member).resolve()}" in evaluation["command"] and evaluation["best_validation_auc"] is None
    assert " ".join(space.by_name(TINY_SPACE, recipe).flags) in evaluation["command"]


def test_search_selects_on_folds_then_reads_test_once_and_resumes(tiny_build, tmp_path, monkeypatch, capsys):
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

    # Which run opened which split (every train_hf.py run appends to the log): test was opened by
    # the two evaluation runs only, once each, after the selection was recorded.
    log = [json.loads(line) for line in (out / "splits.jsonl").read_text().splitlines()]
    selected = [i for i, line in enumerate(log) if line.get("step") == "selection"]
    opened_test = [
        (i, Path(line["run"]).relative_to(out.resolve()).as_posix())
        for i, line in enumerate(log)
        if line.get("split") == "test"
    ]
    assert len(selected) == 1 and sorted(run for _, run in opened_test) == ["evaluation/seed100", "evaluation/seed101"]
    assert all(i > selected[0] for i, _ in opened_test)
    runs = {Path(line["run"]).relative_to(out.resolve()).as_posix() for line in log if "run" in line}
    assert {"search/plain/fold0", "search/wd/fold1", "final/seed100", "final/seed101"} <= runs
    for seed in (100, 101):  # the final seeds trained and validated without opening test
        r = json.loads((out / f"final/seed{seed}/results.json").read_text())
        assert (
            r["test"] is None
            and r["cross_validation"] is None
            and "test not read" in (out / f"final/seed{seed}/results.md").read_text()
        )
        with np.load(out / f"final/seed{seed}/predictions.npz") as npz:
            assert all(k.startswith("validation_") for k in npz.files)

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
    # The first round's runs reported their epoch (progress.json) and calibrated the budget; a
    # million seconds still fit, so nothing was cut.
    calibration = record["calibration"]
    assert not calibration["replanned"] and {m["run"] for m in calibration["measured"]} <= {
        f"search/{c}/fold{f}" for c in ("plain", "wd") for f in (0, 1)
    }
    assert all(m["epochs_done"] == 1 and m["rows"] == 17 for m in calibration["measured"]) and calibration["measured"]
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
    # The winner and the recipes the final seeds rotate over (the winner first, picked on the
    # folds' held-out predictions) are recorded before the official split is trained on; seed i
    # trains the rotation's (i mod n)-th recipe.
    sel, fin = record["selection"], record["final"]
    assert sel["winner"] == sel["ranking"][0]["candidate"] == fin["winner"]
    assert sel["decided_after_seconds"] <= fin["started_after_seconds"]
    rotation = protocol.rotation_names(record)
    assert rotation[0] == sel["winner"] and [s["candidate"] for s in sel["mix"]["steps"]][: len(rotation)] == rotation
    assert fin["recipes"] == {"seed100": rotation[0], "seed101": rotation[1 % len(rotation)]}
    for seed, member in zip((100, 101), fin["members"]):
        _assert_trained_and_evaluated_with(out, seed, member, fin["recipes"][f"seed{seed}"])
    # The ensemble is the mean of the seeds' evaluated probabilities, scored once.
    with (
        np.load(out / "evaluation/seed100/predictions.npz") as a,
        np.load(out / "evaluation/seed101/predictions.npz") as b,
        np.load(out / "predictions.npz") as e,
    ):
        np.testing.assert_allclose(e["test_scores"], (a["test_scores"] + b["test_scores"]) / 2)
    assert [m["evaluation"] for m in results["members"]] == [str(out / "evaluation" / f"seed{s}") for s in (100, 101)]
    assert len(calls) == 1
    assert results["test"]["auc_95ci"][0] <= results["test"]["auc"] <= results["test"]["auc_95ci"][1]
    assert results["clinical"]["bootstrap_95"]["resamples"] == 1000 and (out / "reliability.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "Google AutoML Vision" in md and "MedMNIST v1" in md and "Chosen: **" in md
    # Which recipe each seed trained, in results.json, results.md and the decathlon table.
    assert [m["recipe"] for m in results["members"]] == [fin["recipes"]["seed100"], fin["recipes"]["seed101"]]
    assert results["benchmark"]["ensemble"] == final.ensemble_name([m["recipe"] for m in results["members"]])
    assert f"| seed100 | {fin['recipes']['seed100']} |" in md and f"| seed101 | {fin['recipes']['seed101']} |" in md
    assert (
        f"Final seeds rotate over: **{', '.join(rotation)}** (greedy ensemble selection"
        if len(rotation) > 1
        else f"Final seeds: **{rotation[0]}** alone, as no other recipe raised the score"
    ) in md

    # Rerun: nothing is trained or evaluated again.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    benchmark.run_subset(target, 1e6, out, **OPTIONS)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamps and len(calls) == 1
    capsys.readouterr()
    argv = ["benchmark", "--subset", "breastmnist", "--dataset", str(tiny_build), "--budget", "1h", "--out", str(out)]
    assert cli.main(argv) == 0  # the finished run's summary line, nothing run again
    assert capsys.readouterr().out.rstrip().endswith(f"{results['benchmark']['ensemble']} -> {out}")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamps and len(calls) == 1

    # The decathlon report: this run ranked among every published BreastMNIST row.
    assert cli.main(["benchmark", "--report", str(out)]) == 0
    table = (out / "decathlon.md").read_text()
    assert "MedMNIST v1 Classification Decathlon" in table and "MedMNIST v2 2D" in table and "MedMNIST+" in table
    assert f"| {results['benchmark']['ensemble']} | 2 |" in table
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


def _fake_trainer(
    fold_auc: dict[str, list[float]],
    wall_seconds: float,
    started: list[str],
    epoch_seconds: float | None = None,
    clock=None,
    first_epoch_seconds: float | None = None,
    watched: bool = True,
    held_out: dict[str, np.ndarray] | None = None,
):
    """A stand-in for scheduler.run_jobs that writes what train_hf.py would, instantly: search runs
    get the given fold AUCs and validation predictions only; final runs none on test, evaluation
    runs test predictions too. With ``epoch_seconds``, each training run first reports its epochs in
    progress.json as train_hf.py does (10 s of start-up, its first epoch taking ``first_epoch_seconds``,
    as long as the others unless given), after its first and after its third (or last) epoch, and
    ``watch`` is asked after each, as the real scheduler asks it while runs go (unless not
    ``watched``: runs that end between two polls); ``clock`` (a FakeClock) is moved on by what
    each run takes. ``held_out`` gives a candidate's validation probabilities on every fold (random
    otherwise)."""
    rng = np.random.default_rng(0)
    first_epoch = epoch_seconds if first_epoch_seconds is None else first_epoch_seconds

    def reported(epochs: float) -> float:  # seconds since the run began, after ``epochs`` epochs
        return 10 + first_epoch + epoch_seconds * (epochs - 1)

    def run_jobs(jobs, pool, deadline=None, poll=0.5, watch=None):
        status = {}
        for job in jobs:
            if job.done:
                status[job.out] = "kept"
                continue
            started.append(str(job.out))
            job.out.mkdir(parents=True, exist_ok=True)
            reports = 0.0
            if epoch_seconds is not None and "--model" not in job.args:
                planned = float(job.args[job.args.index("--num_train_epochs") + 1])
                for epoch in sorted({1.0, min(3.0, planned)}):
                    progress = {"epoch": epoch, "seconds": reported(epoch), "train_started": 10.0, "rows": 20}
                    progress["first"] = {"epoch": 1.0, "seconds": reported(1)}
                    (job.out / "progress.json").write_text(json.dumps(progress))
                    if clock is not None:
                        clock.advance(reported(epoch) - reports)
                    reports = reported(epoch)
                    if watched and watch is not None and watch():
                        status.update({j.out: "cancelled" for j in jobs if j.out not in status})
                        return status
            if clock is not None:
                clock.advance(wall_seconds)
            cv, evaluation = "--cv_fold" in job.args, "--model" in job.args
            log = job.args[job.args.index("--split_log") + 1]
            with open(log, "a") as handle:  # the splits it opens, as train_hf.py logs them
                for split in ("train", "validation") + (("test",) if evaluation else ()):
                    handle.write(json.dumps({"split": split, "run": str(job.out.resolve()), "rank": 0}) + "\n")
            results = {
                "collection": "medmnist",
                "config": "breastmnist",
                "subset": "breastmnist",
                "task": "label",
                "task_type": "binary",
                "num_labels": 2,
                "label_names": ["malignant", "benign"],
                "image_size": 28,
                # with a clock, the whole time the run took on it (its first epoch's report included)
                "wall_time_seconds": wall_seconds + (reports if clock else 0),
                "command": " ".join(job.args),
                "best_validation_auc": 0.9,
            }
            y = np.array([0, 1] * 10)
            drawn = rng.random((20, 2))
            given = (held_out or {}).get(job.out.parent.name) if cv else None
            arrays = {"validation_labels": y, "validation_scores": drawn if given is None else given}
            if cv:
                fold = int(job.args[job.args.index("--cv_fold") + 1])
                results |= {
                    "cross_validation": {"fold": fold},
                    "test": None,
                    "validation": {"auc": fold_auc[job.out.parent.name][fold], "acc": 0.5},
                }
            elif evaluation:
                arrays |= {"test_labels": y, "test_scores": rng.random((20, 2))}
                results |= {
                    "cross_validation": None,
                    "validation": {"auc": 0.9, "acc": 0.8},
                    "test": {"auc": 0.5, "acc": 0.5},
                }
            else:  # a final seed: --eval_test false
                results |= {"cross_validation": None, "validation": {"auc": 0.9, "acc": 0.8}, "test": None}
            np.savez(job.out / "predictions.npz", **arrays)
            (job.out / "results.json").write_text(json.dumps(results))
            status[job.out] = "done"
        return status

    return run_jobs


SPACE3 = TINY_SPACE + (space.Candidate("big", ("--arch", "resnet", "--arch_size", "base"), cost=3.0),)
FAKE = {**OPTIONS, "space": SPACE3, "fold_tiers": (3,)}  # the runs are faked: three candidates, three folds


# Held-out probabilities on the fake folds' labels ([0, 1] * 10): the first half of the rows told
# apart, the second half not (AUC 0.875), and the reverse; averaged, every row is told apart.
_Y = np.array([0, 1] * 10, dtype=float)
_TOLD = np.stack([1 - (0.1 + 0.8 * _Y), 0.1 + 0.8 * _Y], axis=1)
FIRST_HALF = np.concatenate([_TOLD[:10], np.full((10, 2), 0.5)])
SECOND_HALF = np.concatenate([np.full((10, 2), 0.5), _TOLD[10:]])


def test_a_hopeless_candidate_is_dropped_after_two_folds(tiny_build, tmp_path, monkeypatch):
    started: list[str] = []
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.70, 0.72, 0.99]}
    alike = {"plain": FIRST_HALF, "wd": FIRST_HALF, "big": FIRST_HALF}  # big errs as the leader does
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, started, held_out=alike))
    done = benchmark.run_subset(benchmark.Target("breastmnist", dataset=str(tiny_build)), 1e9, tmp_path / "b", **FAKE)
    record = done.record
    assert set(record["dropped"]) == {"big"} and record["dropped"]["big"]["after_folds"] == [0, 1]
    # Two slots: three candidates take two folds a round (three full waves), two take one.
    assert [r["folds"] for r in record["rounds"]] == [[0, 1], [2]]
    assert not (tmp_path / "b/search/big/fold2").exists()  # its third fold (which would have been 0.99) never ran
    assert record["selection"]["winner"] == "wd" and record["selection"]["folds_compared"] == [0, 1, 2]
    assert "dropped as hopeless: big" in (tmp_path / "b/results.md").read_text()


def test_a_weak_candidate_that_raises_the_leader_in_the_mix_is_kept(tiny_build, tmp_path, monkeypatch):
    """The final seeds rotate over a mix, so a candidate far below the leader alone is not dropped
    while averaging it with the leader scores above the leader: it errs where the leader does not."""
    started: list[str] = []
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.70, 0.72, 0.74]}
    differs = {"plain": FIRST_HALF, "wd": FIRST_HALF, "big": SECOND_HALF}
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, started, held_out=differs))
    done = benchmark.run_subset(benchmark.Target("breastmnist", dataset=str(tiny_build)), 1e9, tmp_path / "b", **FAKE)
    record = done.record
    assert record["dropped"] == {} and (tmp_path / "b/search/big/fold2/results.json").is_file()
    kept = record["kept_as_partner"]["big"]
    assert kept["after_folds"] == [0, 1] and kept["leader"] == "wd"
    assert (kept["leader_auc"], kept["pair_auc"]) == (pytest.approx(0.875), pytest.approx(1.0))
    # the mix then takes it: wd, then big (1.0 on every fold)
    assert record["selection"]["mix"]["rotation"] == ["wd", "big"]
    assert done.results["benchmark"]["kept_as_partner"]["big"]["leader"] == "wd"
    assert "kept as a partner: big" in (tmp_path / "b/results.md").read_text()


def test_the_final_seeds_rotate_over_the_mix_and_each_is_evaluated_as_it_was_trained(tiny_build, tmp_path, monkeypatch):
    started: list[str] = []
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.82, 0.81, 0.82]}
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, started))
    seen = {}

    def picks(predictions, order, folds, count, score):  # the selection gets the survivors' held-out folds
        toy = score(np.array([0, 1, 0, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]))
        seen.update(order=order, folds=folds, count=count, shapes={n: p[2][1].shape for n, p in predictions.items()})
        seen["auc"] = toy
        return [("wd", 0.85), ("big", 0.90), ("plain", 0.899)]

    monkeypatch.setattr(selection, "ensemble_selection", picks)
    options = {**FAKE, "final_seeds": (100, 101, 102), "seed_tiers": (3,)}
    out = tmp_path / "b"
    done = benchmark.run_subset(benchmark.Target("breastmnist", dataset=str(tiny_build)), 1e9, out, **options)
    record, results = done.record, done.results
    assert seen == {
        "order": ["wd", "big", "plain"],  # the ranking, winner first
        "folds": [0, 1, 2],
        "count": 3,  # one pick per planned seed
        "shapes": {n: (20, 2) for n in ("wd", "big", "plain")},
        "auc": 1.0,
    }
    # plain, the third pick, lowered the score: the rotation is wd, big, and seed i trains its (i mod 2)-th.
    assert record["selection"]["mix"]["rotation"] == ["wd", "big"] and record["final"]["winner"] == "wd"
    assert record["final"]["recipes"] == {"seed100": "wd", "seed101": "big", "seed102": "wd"}
    for seed, recipe in record["final"]["recipes"].items():
        flags = " ".join(space.by_name(SPACE3, recipe).flags)
        trained = json.loads((out / "final" / seed / "results.json").read_text())["command"]
        evaluated = json.loads((out / "evaluation" / seed / "results.json").read_text())["command"]
        assert flags in trained and flags in evaluated and (("--arch_size base" in trained) == (recipe == "big"))
    assert [m["recipe"] for m in results["members"]] == ["wd", "big", "wd"]
    assert results["model"] == "hfmed benchmark: wd x2 + big x1, mean of 3 seed(s)"
    md = (out / "results.md").read_text()
    assert "Final seeds rotate over: **wd, big**" in md and "(the winner, and the mix below)" in md


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
    assert (
        sum("final" in s for s in started) == 1 and sum("evaluation" in s for s in started) == 1 and len(started) == 5
    )


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


def test_budget_the_search_left_grows_the_final_ensemble(tiny_build, tmp_path, monkeypatch):
    started: list[str] = []
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86]}
    options = {**FAKE, "space": TINY_SPACE, "final_seeds": (100, 101, 102, 103, 104)}
    target = benchmark.Target("breastmnist", dataset=str(tiny_build))
    # The search's runs report their first epoch, so the speed is measured before the final seeds.
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, started, epoch_seconds=1.0))
    done = benchmark.run_subset(target, 1e9, tmp_path / "b", **options)
    record = done.record
    grown = record["seeds_grown"]
    assert (grown["planned"], grown["seeds"]) == (2, 5) and "not only the 2 planned" in grown["why"]
    assert record["plan"]["seeds"] == record["final"]["seeds"] == [100, 101, 102, 103, 104]
    assert sorted(Path(s).name for s in started if "evaluation" in s) == [f"seed{s}" for s in range(100, 105)]
    assert done.results["model"].endswith("mean of 5 seed(s)") and len(done.results["members"]) == 5
    assert "final seeds grown: " in (tmp_path / "b/results.md").read_text()
    # No speed measured (no run reported an epoch): the prior alone adds no seed.
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, []))
    unmeasured = benchmark.run_subset(target, 1e9, tmp_path / "c", **options).record
    assert unmeasured["final"]["seeds"] == [100, 101] and unmeasured["seeds_grown"]["seeds"] == 2


def test_time_the_planned_search_leaves_searches_the_candidate_the_plan_cut(tiny_build, tmp_path, monkeypatch):
    """One slot, a 240 s budget: at the prior the three candidates' search and the final seeds
    (~294 s) do not fit, so the plan cuts big. Runs of 12 s (0.6x the prior) leave 168 s after
    the planned search, which hold big's three folds and the final seeds (~115 s): the search
    grows by big, which wins its folds. Runs of 20 s (1.0x) leave 120 s against ~172 s: big is
    not searched, and the record says so."""
    target = benchmark.Target("breastmnist", dataset=str(tiny_build))
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.85, 0.86, 0.90]}
    outcomes = {}
    for wall in (1.0, 9.0):  # plus 11 s of start-up and first epoch per run
        clock = FakeClock()
        monkeypatch.setattr(protocol, "now", clock)
        monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, wall, [], epoch_seconds=1.0, clock=clock))
        done = benchmark.run_subset(target, 240, tmp_path / str(wall), **{**FAKE, "parallel": 1})
        assert done.record["plan"]["cut"] == ["candidates big not searched"] and clock() <= 240
        outcomes[wall] = done
    grown = outcomes[1.0].record
    assert [(g["candidate"], g["searched"]) for g in grown["search_grown"]] == [("big", True)]
    assert grown["plan"]["candidates"] == ["plain", "wd", "big"]
    assert grown["selection"]["winner"] == grown["final"]["winner"] == "big"
    assert grown["selection"]["folds_compared"] == [0, 1, 2] and grown["skipped"] == []
    assert "search grown by big: " in (tmp_path / "1.0" / "results.md").read_text()
    kept = outcomes[9.0].record
    assert [(g["candidate"], g["searched"]) for g in kept["search_grown"]] == [("big", False)]
    assert "did not fit" in kept["search_grown"][0]["why"] and not (tmp_path / "9.0/search/big").exists()
    assert "cut candidate big: not searched: " in (tmp_path / "9.0" / "results.md").read_text()
    assert kept["plan"]["candidates"] == ["plain", "wd"] and kept["selection"]["winner"] == "wd"


def test_a_grown_candidate_stopped_before_its_last_fold_is_left_out_of_the_choice(tiny_build, tmp_path, monkeypatch):
    """big is added to the finished search and leads its first two folds by far, but its last fold
    is stopped: the planned candidates, whose folds were all done, were not dropped for it, the
    choice stays with them on all their folds, and the record says why."""
    target = benchmark.Target("breastmnist", dataset=str(tiny_build))
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.95, 0.95, 0.95]}
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    fake = _fake_trainer(aucs, 1.0, [], epoch_seconds=1.0, clock=clock)

    def stopping(jobs, pool, **kwargs):  # big's third fold runs past the search's share
        late = [j for j in jobs if j.out.parent.name == "big" and j.out.name == "fold2"]
        status = fake([j for j in jobs if j not in late], pool, **kwargs)
        return {**status, **{j.out: "stopped" for j in late}}

    monkeypatch.setattr(protocol, "run_jobs", stopping)
    record = benchmark.run_subset(target, 240, tmp_path / "b", **{**FAKE, "parallel": 1}).record
    assert record["search_grown"][0]["candidate"] == "big" and record["search_grown"][0]["unfinished"] == [0, 1]
    assert record["dropped"] == {} and record["selection"]["winner"] == "wd"
    assert record["selection"]["folds_compared"] == [0, 1, 2]
    assert "left out of the choice" in (tmp_path / "b/results.md").read_text()


def test_final_seeds_read_only_when_done_are_kept(tiny_build, tmp_path, monkeypatch):
    """No search, seeds that ended between two polls: their speed is read once they are done, and
    it is recorded, not acted on: at 400 s an epoch the plan would not fit, but the seeds are
    trained and nothing is started again."""
    started: list[str] = []
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    monkeypatch.setattr(
        protocol, "run_jobs", _fake_trainer({}, 1.0, started, epoch_seconds=400.0, clock=clock, watched=False)
    )
    options = {**FAKE, "epoch_tiers": (2,), "fold_tiers": (3,), "seed_tiers": (1,), "parallel": 1}
    done = benchmark.run_subset(
        benchmark.Target("breastmnist", dataset=str(tiny_build)), 100, tmp_path / "b", **options
    )
    calibration = done.record["calibration"]
    assert [m["run"] for m in calibration["measured"]] == ["final/seed100"] and not calibration["replanned"]
    assert calibration["measured"][0]["epochs_done"] == 2 and calibration["slowdown"] > 10
    assert [Path(s).name for s in started] == ["seed100", "seed100"]  # trained, then evaluated: once each
    assert done.results["test"]["auc"] is not None


def test_with_no_search_the_time_the_first_seeds_leave_takes_more_seeds(tiny_build, tmp_path, monkeypatch):
    """A budget with room for no search (100 s against ~130 s for one): the final seeds are the
    first runs; they take 10 s each on the fake clock, half the prior, and the time they leave
    holds the remaining seeds, trained after them."""
    started: list[str] = []
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer({}, 0.1, started, epoch_seconds=0.1, clock=clock))
    options = {**FAKE, "space": TINY_SPACE, "final_seeds": (100, 101, 102, 103, 104), "parallel": 2}
    done = benchmark.run_subset(
        benchmark.Target("breastmnist", dataset=str(tiny_build)), 100, tmp_path / "b", **options
    )
    record = done.record
    assert record["plan"]["folds"] == 0 and record["calibration"]["measured"][0]["run"] == "final/seed100"
    grown = record["seeds_grown"]
    assert (grown["planned"], grown["seeds"]) == (2, 5) and "after the first 2 final seeds" in grown["why"]
    trained = [Path(s).relative_to(tmp_path / "b").as_posix() for s in started if "/final/" in s]
    assert trained == [f"final/seed{s}" for s in range(100, 105)]  # the two planned first, once each
    assert record["final"]["seeds"] == [100, 101, 102, 103, 104] and len(done.results["members"]) == 5
    assert clock() <= 100  # within the budget


class FakeClock:
    """protocol.now: budget time that moves only when a fake run says it took time."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def test_an_interrupted_benchmark_counts_the_time_it_spent_when_resumed(tiny_build, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, below) half-way through the second round: the record keeps the time up to
    the interruption, the stopped half round included, and the resumed run goes on counting from it."""
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    aucs = {"plain": [0.80, 0.81, 0.82], "wd": [0.90, 0.91, 0.92], "big": [0.85, 0.86, 0.87]}
    finish = _fake_trainer(aucs, 50.0, [], clock=clock)
    rounds = []

    def interrupted(jobs, *args, **kwargs):
        rounds.append(jobs)
        if len(rounds) == 2:
            clock.advance(600.0)  # half a round trained, then the interruption
            raise KeyboardInterrupt
        return finish(jobs, *args, **kwargs)

    monkeypatch.setattr(protocol, "run_jobs", interrupted)
    target, out = benchmark.Target("breastmnist", dataset=str(tiny_build)), tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_subset(target, 1e9, out, **FAKE)
    interrupted_at = clock()
    assert interrupted_at > 600
    assert json.loads((out / protocol.RECORD_FILE).read_text())["spent_seconds"] == pytest.approx(interrupted_at)

    monkeypatch.setattr(protocol, "run_jobs", finish)
    done = benchmark.run_subset(target, 1e9, out, **FAKE)
    assert done.record["complete"] and clock() > interrupted_at
    assert done.record["spent_seconds"] == pytest.approx(clock())


def test_a_benchmark_planned_under_another_space_is_refused_on_resume_untouched(tiny_build, tmp_path, monkeypatch):
    """The space changes between versions (a recipe replaced): resuming a folder whose plan names a
    candidate this version lacks is one line, before any run and without writing to the folder."""
    target, out = benchmark.Target("breastmnist", dataset=str(tiny_build)), tmp_path / "b"

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(protocol, "run_jobs", stopped)
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_subset(target, 1e9, out, **OPTIONS)
    saved = (out / protocol.RECORD_FILE).read_text()
    assert json.loads(saved)["plan"]["candidates"] == ["plain", "wd"]
    renamed = (TINY_SPACE[0], space.Candidate("wd_cosine", (*TINY_SPACE[1].flags, "--lr_scheduler_type", "cosine")))
    with pytest.raises(UserError, match="planned with wd, not in this version's search space; resume it with"):
        benchmark.run_subset(target, 1e9, out, **{**OPTIONS, "space": renamed})
    assert (out / protocol.RECORD_FILE).read_text() == saved


def test_sigterm_stops_a_benchmark_as_ctrl_c_does(tiny_build, tmp_path, monkeypatch, capsys):
    import os
    import signal

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the benchmark")

    def untouched(signum, frame):  # what SIGTERM would reach if the command did not handle it
        raise AssertionError("SIGTERM reached the handler the command should have replaced")

    monkeypatch.setattr(benchmark, "run_subset", terminated)
    before = signal.signal(signal.SIGTERM, untouched)
    try:
        argv = ["benchmark", "--subset", "breastmnist", "--budget", "1h", "--out", str(tmp_path / "b")]
        assert cli.main([*argv, "--dataset", str(tiny_build)]) == 130
        assert "interrupted; rerun the same command to continue" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGTERM) is untouched  # the handler lives as long as the command
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_first_epochs_speed_cuts_the_plan_and_the_record_says_why(tiny_build, tmp_path, monkeypatch):
    """Runs far slower than the prior: the first search run's epochs (injected: 400 s each) show
    it, the plan is cut before the round goes on, and the search restarts under the new plan."""
    started: list[str] = []
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.82, 0.83, 0.84]}
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 100.0, started, epoch_seconds=400.0, clock=clock))
    options = {**FAKE, "epoch_tiers": (4, 1), "fold_tiers": (3, 2), "parallel": 1}
    target = benchmark.Target("breastmnist", dataset=str(tiny_build))
    done = benchmark.run_subset(target, 18000, tmp_path / "b", **options)
    record = done.record
    calibration = record["calibration"]
    before = calibration["plan_before"]
    assert (before["epochs"], before["folds"], before["candidates"], len(before["seeds"])) == (
        4,
        3,
        ["plain", "wd", "big"],
        2,
    )
    # Measured: the first run alone (20 rows, 10 s of start-up, then 400 s an epoch, its third seen), projected
    # to its 4 epochs against the prior estimate of them (20 s + 4 x 20 images at 150 per second).
    assert [m["run"] for m in calibration["measured"]] == ["search/plain/fold0"]
    assert calibration["measured"][0]["epochs_done"] == 3
    assert calibration["slowdown"] == pytest.approx((10 + 4 * 400) / (20 + 4 * 20 / 150)) and calibration["replanned"]
    # At that speed the plan (about 21,500 s) no longer fits the 16,790 s left; without the dearest
    # candidate it does (about 16,100 s): the first cut in the budget's order. Once the planned
    # search was over, the time left did not hold big's folds: the search did not grow by it.
    grown = record["search_grown"]
    assert [(g["candidate"], g["searched"]) for g in grown] == [("big", False)]
    plan = record["plan"]
    assert (plan["epochs"], plan["folds"], plan["candidates"], plan["seeds"]) == (
        4,
        3,
        ["plain", "wd"],
        before["seeds"],
    )
    sizes = {"train": 24, "validation": 11}
    assert (
        budget.plan_seconds(plan, budget.Setting(SPACE3, sizes, 1), calibration["slowdown"])
        <= 18000 - 1210
        < budget.plan_seconds(before, budget.Setting(SPACE3, sizes, 1), calibration["slowdown"])
    )
    assert plan["cut"] == ["after measuring the first runs: candidates big not searched"]
    assert record["skipped"][0]["replanned"] and "took 78.41x the prior estimate" in record["skipped"][0]["why"]
    # The search ran under the new plan only: its first run was started again with the new flags.
    assert started[0].endswith("search/plain/fold0") and started[1].endswith("search/plain/fold0")
    for name in plan["candidates"][: 2 if plan["folds"] else 0]:
        args = json.loads((tmp_path / "b" / "search" / name / "fold0" / "results.json").read_text())["command"]
        assert f"--num_train_epochs {plan['epochs']} " in args and f"--cv_folds {plan['folds']} " in args
    assert done.results["benchmark"]["skipped"][0]["replanned"]
    assert "took 78.41x" in (tmp_path / "b" / "results.md").read_text()


def test_a_plan_that_still_fits_at_the_measured_speed_is_kept(tiny_build, tmp_path, monkeypatch):
    started: list[str] = []
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.82, 0.83, 0.84]}
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer(aucs, 1.0, started, epoch_seconds=30.0, clock=clock))
    done = benchmark.run_subset(benchmark.Target("breastmnist", dataset=str(tiny_build)), 1e6, tmp_path / "b", **FAKE)
    calibration = done.record["calibration"]
    assert not calibration["replanned"] and calibration["slowdown"] == pytest.approx((10 + 30) / (20 + 20 / 150))
    assert [m["run"] for m in calibration["measured"]] == ["search/plain/fold0"] and done.record["plan"]["cut"] == []
    assert len(set(started)) == len(started)  # nothing started twice


def test_a_slow_first_epoch_alone_does_not_cut_the_plan(tiny_build, tmp_path, monkeypatch):
    """A first epoch pays one-off costs (cold caches, the first evaluation and checkpoint): a real
    BreastMNIST run once took 8.8 s for it and about 4.9 s for each later one, and projected over
    100 epochs it cut two candidates from a plan that fitted. Here the first epoch takes 400 s and
    the later ones 1 s, the setting in which 400 s epochs cut the plan (test above): the speed is
    read after the first epoch, which is counted once, and nothing is cut."""
    started: list[str] = []
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    aucs = {"plain": [0.80, 0.82, 0.81], "wd": [0.83, 0.84, 0.86], "big": [0.82, 0.83, 0.84]}
    fake = _fake_trainer(aucs, 100.0, started, epoch_seconds=1.0, clock=clock, first_epoch_seconds=400.0)
    monkeypatch.setattr(protocol, "run_jobs", fake)
    options = {**FAKE, "epoch_tiers": (4, 1), "fold_tiers": (3, 2), "parallel": 1}
    done = benchmark.run_subset(
        benchmark.Target("breastmnist", dataset=str(tiny_build)), 18000, tmp_path / "b", **options
    )
    calibration = done.record["calibration"]
    measured = calibration["measured"]
    assert [m["run"] for m in measured] == ["search/plain/fold0"] and not calibration["replanned"]
    assert (measured[0]["epochs_done"], measured[0]["first_epoch_seconds"], measured[0]["seconds_per_epoch"]) == (
        3,
        410,
        1,
    )
    assert calibration["slowdown"] == pytest.approx((10 + 400 + 3 * 1) / (20 + 4 * 20 / 150))
    assert done.record["plan"]["candidates"] == ["plain", "wd", "big"] and done.record["plan"]["cut"] == []
    assert len(set(started)) == len(started)  # nothing started again


@pytest.mark.parametrize(
    ("progress", "finished", "projected"),
    [
        # Not resumed: start-up 10 s, first epoch ends at 30 s, then 5 s an epoch: 30 + 5 x 9 for 10 epochs.
        ({"epoch": 3.0, "seconds": 40.0, "train_started": 10.0, "first": {"epoch": 1.0, "seconds": 30.0}}, False, 75.0),
        # Only one epoch after the first, still running: not yet known.
        ({"epoch": 2.0, "seconds": 35.0, "train_started": 10.0, "first": {"epoch": 1.0, "seconds": 30.0}}, False, None),
        # ... but a run that ended there is all there will be: its later epoch's rate.
        ({"epoch": 2.0, "seconds": 35.0, "train_started": 10.0, "first": {"epoch": 1.0, "seconds": 30.0}}, True, 75.0),
        # Resumed at epoch 6 (its first epoch here is the 7th): every epoch at the later rate, after start-up.
        ({"epoch": 9.0, "seconds": 40.0, "train_started": 10.0, "first": {"epoch": 7.0, "seconds": 30.0}}, False, 60.0),
        # A one-epoch run that ended, or a folder from before ``first`` was written: its whole time.
        ({"epoch": 1.0, "seconds": 30.0, "train_started": 10.0, "first": {"epoch": 1.0, "seconds": 30.0}}, True, 210.0),
        ({"epoch": 4.0, "seconds": 50.0, "train_started": 10.0}, True, 110.0),
        ({"epoch": 4.0, "seconds": 50.0, "train_started": 10.0}, False, None),
        (None, True, None),
    ],
)
def test_a_runs_speed_is_read_after_its_first_epoch(progress, finished, projected):
    measured = protocol._measure(progress and {**progress, "rows": 20}, 10, finished)
    assert (measured and measured["projected_seconds"]) == (pytest.approx(projected) if projected else None)


def test_without_a_search_the_final_seeds_first_epochs_cut_the_plan(tiny_build, tmp_path, monkeypatch):
    """A budget with room for no search: the final seed is the first run, and its first epoch
    (10 s start-up, 20 s per epoch: 4.4x the prior) shows that 4 epochs no longer fit."""
    started: list[str] = []
    clock = FakeClock()
    monkeypatch.setattr(protocol, "now", clock)
    monkeypatch.setattr(protocol, "run_jobs", _fake_trainer({}, 5.0, started, epoch_seconds=20.0, clock=clock))
    options = {**FAKE, "epoch_tiers": (4, 1), "fold_tiers": (3,), "seed_tiers": (2, 1), "parallel": 1}
    done = benchmark.run_subset(
        benchmark.Target("breastmnist", dataset=str(tiny_build)), 100, tmp_path / "b", **options
    )
    record = done.record
    assert record["calibration"]["plan_before"] == {"epochs": 4, "folds": 0, "candidates": ["plain"], "seeds": [100]}
    assert [m["run"] for m in record["calibration"]["measured"]] == ["final/seed100"]
    assert record["calibration"]["slowdown"] == pytest.approx((10 + 4 * 20) / (20 + 4 * 20 / 150))
    assert (
        record["plan"]["epochs"] == 1
        and "after measuring the first runs: 1 epochs per run instead of 4" in record["plan"]["cut"]
    )
    assert [Path(s).relative_to(tmp_path / "b").as_posix() for s in started] == [
        "final/seed100",
        "final/seed100",
        "evaluation/seed100",
    ]
    assert (
        "--num_train_epochs 1 " in json.loads((tmp_path / "b/final/seed100/results.json").read_text())["command"] + " "
    )


def test_a_plan_too_short_to_wait_for_later_epochs_is_read_at_the_first():
    """Three epochs or fewer: waiting for two after the first would read the runs only as they end."""
    progress = {
        "epoch": 1.0,
        "seconds": 30.0,
        "train_started": 10.0,
        "rows": 20,
        "first": {"epoch": 1.0, "seconds": 30.0},
    }
    assert protocol._measure(progress, 3, finished=False)["projected_seconds"] == pytest.approx(70.0)
    assert protocol._measure(progress, 4, finished=False) is None


def test_progress_json_keeps_the_first_epoch_this_process_finished(tmp_path):
    """What train_hf.py writes for the reading above: the first epoch's end is its checkpoint's
    write (evaluation and checkpoint are one-off costs of it too), later epochs leave it alone,
    and a resumed run names the epoch it first finished."""
    import time

    from transformers import TrainerState

    from hfmed.training.progress import ProgressFile

    def read():
        return json.loads((tmp_path / "progress.json").read_text())

    state = TrainerState()
    callback = ProgressFile(tmp_path, time.perf_counter(), rows=20)
    callback.on_train_begin(None, state, None)
    state.epoch = 1.0
    callback.on_epoch_end(None, state, None)
    callback.on_save(None, state, None)
    first = read()["first"]
    assert first == {"epoch": 1.0, "seconds": read()["seconds"]} and read()["rows"] == 20
    for epoch in (2.0, 3.0):
        state.epoch = epoch
        callback.on_epoch_end(None, state, None)
        callback.on_save(None, state, None)
    assert read()["epoch"] == 3.0 and read()["first"] == first and read()["seconds"] > first["seconds"]
    resumed = ProgressFile(tmp_path, time.perf_counter(), rows=20)
    state.epoch = 7.0
    resumed.on_epoch_end(None, state, None)
    assert read()["first"]["epoch"] == 7.0
