"""hfmed.benchmark's pure parts against hand-computed values: clinical figures, folds, the budget
plan, early drops, ranks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hfmed import benchmark
from hfmed.benchmark import budget, clinical, decathlon, selection, space
from hfmed.training import folds

# Binary: 6 images, positive probability as the second column.
Y = np.array([1, 1, 1, 0, 0, 0])
P = np.array([0.9, 0.6, 0.4, 0.3, 0.7, 0.1])
S = np.stack([1 - P, P], axis=1)


def test_binary_sensitivity_specificity_and_balanced_accuracy_by_hand():
    # decisions >0.5: 1 1 0 0 1 0 -> TP 2, FN 1, TN 2, FP 1
    figures = clinical.per_class("binary", Y, S)
    assert figures["sensitivity"] == pytest.approx([2 / 3, 2 / 3])  # class 0: TN/(TN+FP) seen from class 0
    assert figures["specificity"] == pytest.approx([2 / 3, 2 / 3])
    assert figures["support"] == [3, 3]
    assert clinical.balanced_accuracy("binary", Y, S) == pytest.approx(2 / 3)


def test_multiclass_per_class_and_undefined_precision():
    y = np.array([0, 0, 1, 2, 2, 2])
    s = np.eye(3)[[0, 1, 1, 2, 2, 0]]  # predictions 0 1 1 2 2 0
    figures = clinical.per_class("multi-class", y, s)
    assert figures["sensitivity"] == pytest.approx([1 / 2, 1.0, 2 / 3])
    assert figures["specificity"] == pytest.approx([3 / 4, 4 / 5, 1.0])
    assert figures["precision"] == pytest.approx([1 / 2, 1 / 2, 1.0])
    assert clinical.balanced_accuracy("ordinal", y, s) == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert clinical.per_class("multi-class", np.array([0, 0]), np.eye(3)[[0, 0]])["precision"][1] is None


def test_multi_label_balanced_accuracy_is_the_mean_of_each_labels_two_rates():
    y = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    s = np.array([[0.8, 0.2], [0.6, 0.1], [0.4, 0.9], [0.1, 0.3]])
    # label 0: TP 1 FN 1 TN 1 FP 1 -> 0.5/0.5; label 1: TP 1 FN 1 TN 2 FP 0 -> 0.5/1.0
    figures = clinical.per_class("multi-label", y, s)
    assert figures["sensitivity"] == pytest.approx([0.5, 0.5]) and figures["specificity"] == pytest.approx([0.5, 1.0])
    assert clinical.balanced_accuracy("multi-label", y, s) == pytest.approx((0.5 + 0.75) / 2)


def test_reliability_bins_and_ece_by_hand():
    rel = clinical.reliability("binary", Y, S, bins=5)
    # confidences 0.9 0.6 0.6 0.7 0.7 0.9, correct 1 1 0 1 0 1
    # -> bin [0.6,0.8): conf 0.65 acc 0.5 (4), bin [0.8,1]: 0.9 / 1.0 (2)
    assert rel["count"] == [0, 0, 0, 4, 2]
    assert rel["confidence"][3] == pytest.approx(0.65) and rel["accuracy"][3] == pytest.approx(0.5)
    assert rel["ece"] == pytest.approx((4 * 0.15 + 2 * 0.1) / 6)
    assert rel["confidence"][0] is None
    # multi-label: every (image, label) pair; a probability of exactly 1 lands in the last bin
    ml = clinical.reliability("multi-label", np.array([[1, 0]]), np.array([[1.0, 0.0]]), bins=2)
    assert ml["count"] == [1, 1] and ml["ece"] == pytest.approx(0.0)


def test_bootstrap_is_seeded_and_brackets_the_figure():
    def mean_of(y, s):
        return {"m": float(np.mean(s)), "undefined": float("nan")}

    values = np.arange(50, dtype=float)
    a = clinical.bootstrap_interval(mean_of, values, values, resamples=200, seed=3)
    b = clinical.bootstrap_interval(mean_of, values, values, resamples=200, seed=3)
    assert a == b and a["m"]["low"] < 24.5 < a["m"]["high"] and a["m"]["defined_resamples"] == 200
    assert a["undefined"]["defined_resamples"] == 0
    assert clinical.bootstrap_interval(mean_of, values, values, resamples=200, seed=4)["m"] != a["m"]


def test_folds_are_stratified_and_never_split_a_patient():
    labels = np.array([0] * 40 + [1] * 20)
    plain = folds.grouped_assignment(labels, 5, seed=1)
    for f in range(5):
        assert (labels[plain == f] == 0).sum() == 8 and (labels[plain == f] == 1).sum() == 4
    assert np.array_equal(plain, folds.grouped_assignment(labels, 5, seed=1))
    groups = np.repeat(np.arange(20), 3)  # 20 patients, 3 images each, one label per patient
    grouped = folds.grouped_assignment(labels, 4, groups=groups, seed=0)
    for g in range(20):
        assert len(set(grouped[groups == g])) == 1
    counts = [np.bincount(labels[grouped == f], minlength=2) for f in range(4)]
    assert all(abs(c[0] - 10) <= 3 and abs(c[1] - 5) <= 3 for c in counts)
    with pytest.raises(ValueError, match="groups cannot fill"):
        folds.grouped_assignment(labels, 5, groups=np.repeat([0, 1, 2], 20))
    # multi-label rows stratify as combinations
    assert folds.strata(np.array([[1, 0], [0, 1], [1, 0]])).tolist() == [1, 0, 1]


def test_the_plan_cuts_candidates_then_seeds_then_folds_then_epochs():
    sizes = {"train": 546, "validation": 78}
    setting = budget.Setting(space.SPACE, sizes, 2)  # the frozen tiers
    full = budget.make_plan(1e7, setting)
    assert (full.epochs, full.folds, len(full.candidates), len(full.seeds), full.cut) == (100, 5, 6, 4, [])
    hour = budget.make_plan(3600, setting)
    assert hour.estimated_seconds <= 3600 and hour.cut  # 5 x 5 x ~6 min runs do not fit an hour on 2 slots
    assert hour.candidates == [c.name for c in space.SPACE[: len(hour.candidates)]]
    # Two hours at 1.3x the prior (BreastMNIST's search ran at 1.27-1.36x): every small-ResNet recipe
    # is searched, and the ResNet-18 widths are what the budget cuts; at the 1.53x of an earlier
    # run's first epochs the newest small recipe goes too (the search's growing may add it back).
    small = [c.name for c in space.SPACE if c.cost < 2]
    two_hours = budget.make_plan(7200, setting, 1.3)
    assert two_hours.candidates == small and len(two_hours.seeds) == 4
    slower = budget.make_plan(7200, setting, 1.53)
    assert slower.candidates == small[:-1] and len(slower.seeds) == 4
    tiny = budget.make_plan(1, setting)
    assert (tiny.epochs, tiny.folds, tiny.candidates, tiny.seeds) == (
        1,
        0,
        ["wd_ls"],
        [100],
    ) and "over budget" in tiny.cut[-1]
    # a bigger budget never plans less
    plans = [budget.make_plan(b, setting) for b in (600, 1800, 3600, 7200, 14400)]
    assert [p.estimated_seconds for p in plans] == sorted(p.estimated_seconds for p in plans)


def test_a_search_at_fewer_epochs_comes_before_no_search_but_never_below_the_floor():
    # PneumoniaMNIST's splits, 2 hours at 1.5x the prior: 100 epochs fit without a search, a search
    # only at 30; the plan searches.
    pneumonia = budget.Setting(space.SPACE, {"train": 4708, "validation": 524}, 2)
    plan = budget.make_plan(7200, pneumonia, 1.5)
    assert plan.epochs == space.SEARCH_MIN_EPOCHS == 30 and plan.folds and len(plan.candidates) >= 2
    assert budget.make_plan(7200, dataclasses.replace(pneumonia, search_min_epochs=50), 1.5).folds == 0
    # Where no search fits at 30 epochs, none is planned at 15 (without the floor, these two plan
    # a 15-epoch search): the epochs go first.
    for seconds, sizes in ((3600, pneumonia.sizes), (600, {"train": 546, "validation": 78})):
        floorless = budget.make_plan(seconds, budget.Setting(space.SPACE, sizes, 2, search_min_epochs=1), 1.5)
        cut = budget.make_plan(seconds, budget.Setting(space.SPACE, sizes, 2), 1.5)
        assert (floorless.epochs, floorless.folds) == (15, 3) and (cut.epochs, cut.folds) == (50, 0)


def test_a_subset_too_large_for_the_smallest_tier_gets_the_epochs_the_budget_allows():
    # PathMNIST's splits: 15 epochs of 89,996 images are ~9,000 s at the prior's 150 images/s.
    sizes = {"train": 89_996, "validation": 10_004}
    setting = budget.Setting(space.SPACE, sizes, 2)  # the frozen tiers
    plan = budget.make_plan(7200, setting)
    assert 1 < plan.epochs < space.EPOCH_TIERS[-1] and (plan.folds, plan.candidates) == (0, ["wd_ls"])
    assert plan.seeds == [100, 101]  # two slots: the second seed costs no wall time
    assert plan.estimated_seconds <= 7200 < budget.final_seconds(space.SPACE[0], 2, 89_996, plan.epochs + 1, 2)
    assert f"{plan.epochs} epochs per run instead of 100" in plan.cut and not any("over budget" in c for c in plan.cut)
    # One slot: the epochs come before the second seed.
    alone = budget.make_plan(7200, dataclasses.replace(setting, slots=1))
    assert alone.seeds == [100] and alone.epochs == plan.epochs


def test_time_left_after_the_search_grows_the_final_seeds_up_to_the_most():
    small = space.SPACE[0]

    def seeds(remaining: float, most: int = 10) -> int:
        return budget.grown_seeds(small, 4, most, 546, 100, 2, remaining)

    four = budget.final_seconds(small, 4, 546, 100, 2)
    assert seeds(four) == 4 and seeds(four - 100) == 4  # never fewer than planned (cutting is replan's job)
    six = budget.final_seconds(small, 6, 546, 100, 2)
    assert seeds(six) == 6 and seeds(six - 1) == 5
    assert seeds(1e9) == 10 and seeds(1e9, most=4) == 4
    # a measured slowdown counts: at twice the prior, the time of six seeds holds four
    assert budget.grown_seeds(small, 4, 10, 546, 100, 2, six, slowdown=2.0) == 4


def test_one_added_candidate_runs_its_folds_in_rounds_of_the_slots():
    """BreastMNIST's ResNet-18 widths added to a finished 5-fold search: 500 training images per
    fold, 100 epochs at 2.9x the small ResNet's cost, 20 s start-up; two slots take three rounds,
    sixteen take one, and a measured slowdown scales it."""
    resnet18 = space.by_name(space.SPACE, "wd_ls_resnet18")
    one_fold = 500 * 100 * 2.9 / 150 + 20
    assert budget.candidate_search_seconds(resnet18, 5, 624, 100, 2) == pytest.approx(3 * one_fold)
    assert budget.candidate_search_seconds(resnet18, 5, 624, 100, 16) == pytest.approx(one_fold)
    assert budget.candidate_search_seconds(resnet18, 5, 624, 100, 2, slowdown=0.5) == pytest.approx(1.5 * one_fold)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("45m", 2700), ("1h", 3600), ("1.5h", 5400), ("120", 120)])
def test_budgets_parse(text, seconds):
    assert budget.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1h", "0", "inf"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ValueError, match="budget"):
        budget.parse_budget(text)


def test_hopeless_candidates_are_dropped_on_shared_folds_only():
    scores = {"a": {0: 0.90, 1: 0.92}, "b": {0: 0.85, 1: 0.86}, "c": {0: 0.89, 1: 0.90}}
    assert selection.hopeless(scores, ["a", "b", "c"]) == ["b"]  # 0.91 - 0.855 > 0.03; c is 0.015 behind
    assert selection.hopeless({"a": {0: 0.9}, "b": {0: 0.5}}, ["a", "b"]) == []  # one fold is not enough
    # With held-out predictions, b is kept if averaging it with the leader a raises a's score.
    y = np.array([0, 1, 0, 1])
    told_first, told_second = np.array([0.1, 0.9, 0.5, 0.5]), np.array([0.5, 0.5, 0.1, 0.9])
    first = {f: (y, told_first) for f in (0, 1)}  # a alone: AUC 0.875 on each fold; a with b: 1.0
    partner = {"a": first, "b": {f: (y, told_second) for f in (0, 1)}, "c": first}
    assert selection.hopeless(scores, ["a", "b", "c"], partner, roc_auc_score) == []
    alike = {"a": first, "b": first, "c": first}
    assert selection.hopeless(scores, ["a", "b", "c"], alike, roc_auc_score) == ["b"]
    # b has an extra fold that a lacks: compared on fold 0 and 1 only
    assert selection.ranking({"a": {0: 0.9, 1: 0.9}, "b": {0: 0.8, 1: 0.8, 2: 1.0}}, ["a", "b"])[0] == (
        "a",
        pytest.approx(0.9),
    )
    # a tie at three decimals keeps the space's order
    assert selection.ranking({"x": {0: 0.9001}, "y": {0: 0.9004}}, ["x", "y"])[0][0] == "x"


def _binary(positive: list[float]) -> np.ndarray:
    return np.stack([1 - np.asarray(positive), np.asarray(positive)], axis=1)


def test_ensemble_selection_mixes_recipes_whose_errors_differ_and_leaves_out_what_does_not_help():
    from hfmed import metrics

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    a = _binary([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.35, 0.25])  # ranks positives 4-5 well, 6-7 poorly: AUC 0.8125
    b = _binary([0.1, 0.2, 0.3, 0.4, 0.35, 0.25, 0.9, 0.8])  # the other way round; their mean ranks all: 1.0
    noise = _binary([0.9, 0.1, 0.6, 0.4, 0.2, 0.7, 0.3, 0.5])  # averaged with a: 0.625
    predictions = {n: {f: (labels, p) for f in (0, 1)} for n, p in (("a", a), ("b", b), ("noise", noise))}

    def auc(y, s):
        return metrics.compute("binary", y, s)["auc"]

    steps = selection.ensemble_selection(predictions, ["a", "b", "noise"], [0, 1], 4, auc)
    assert [n for n, _ in steps[:2]] == ["a", "b"] and [s for _, s in steps[:2]] == pytest.approx([0.8125, 1.0])
    assert len(steps) == 4 and selection.best_prefix(steps) == ["a", "b"]  # picks after b add nothing
    # a recipe that only adds noise is never mixed in: a again (the same score) beats it
    steps = selection.ensemble_selection(predictions, ["a", "noise"], [0, 1], 2, auc)
    assert steps == [("a", pytest.approx(0.8125)), ("a", pytest.approx(0.8125))]
    assert selection.best_prefix(steps) == ["a"]
    # the shortest run of picks with the best score at three decimals
    assert selection.best_prefix([("a", 0.9), ("b", 0.9304), ("c", 0.9296)]) == ["a", "b"]
    assert selection.best_prefix([("a", 0.95), ("b", 0.94)]) == ["a"]


def test_average_ranks_share_ties_and_skip_missing():
    assert decathlon.average_ranks([0.9, 0.8, 0.9, None, 0.7]) == [1.5, 3, 1.5, None, 4]


def test_the_decathlon_is_the_ten_v1_subsets_and_each_has_a_v1_row():
    from hfmed import facts

    v1 = facts.baselines()["medmnist_v1"]
    assert set(benchmark.SUBSETS) == set(v1["rows"][0]["results"]) and len(v1["rows"]) == 7
    automl = next(r for r in v1["rows"] if r["method"] == "Google AutoML Vision")
    assert automl["results"]["breastmnist"] == {"auc": 0.932, "acc": 0.865}
    assert "ISBI 2021" in v1["source"]


def _finished(subset: str, auc: float, acc: float) -> dict:
    """What decathlon.markdown reads of a finished benchmark's results.json."""
    test = {"auc": auc, "acc": acc, "auc_95ci": [auc - 0.04, auc + 0.04], "acc_95ci": [acc - 0.04, acc + 0.04]}
    plan = {"cut": []}
    record = {
        "plan": plan,
        "skipped": [],
        "winner": "wd_ls",
        "budget_seconds": 3600,
        "spent_seconds_before_evaluation": 1,
    }
    return {
        "subset": subset,
        "collection": "medmnist",
        "image_size": 28,
        "members": ["a", "b"],
        "test": test,
        "benchmark": record,
    }


def test_the_report_names_the_decathlon_subsets_not_run_only_beside_one_of_them():
    alone_3d = {"adrenalmnist3d": _finished("adrenalmnist3d", 0.86, 0.82)}
    text = decathlon.markdown(alone_3d, decathlon.tables(alone_3d))
    assert "Not run" not in text  # a 3D benchmark is not a decathlon missing nine tenths
    assert "| **hfmed benchmark (this protocol)** | 0.860 / 0.820 (1) | 1.00 |" in text
    breast = {"breastmnist": _finished("breastmnist", 0.91, 0.88)}
    text = decathlon.markdown(breast, decathlon.tables(breast))
    missing = next(line for line in text.splitlines() if line.startswith("Not run"))
    assert "pathmnist" in missing and "breastmnist" not in missing and "adrenalmnist3d" not in missing


@pytest.mark.parametrize("task,classes", [("binary", 2), ("multi-class", 4), ("ordinal", 5), ("multi-label", 3)])
def test_the_bootstrap_auc_and_acc_are_the_medmnist_definitions(task, classes):
    import warnings

    from hfmed import metrics

    rng = np.random.default_rng(7)
    n = 60
    if task == "multi-label":
        y, s = rng.integers(0, 2, (n, classes)), rng.random((n, classes))
        y[:, 2] = 0  # a label never present: left out of the AUC mean by both
    else:
        y = rng.integers(0, classes, (n, 1))
        s = rng.random((n, classes))
        s = s / s.sum(axis=1, keepdims=True)
        s[:5] = np.round(s[:5], 1)  # ties
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.SkippedClassWarning)
        expected = metrics.compute(task, y, s)
    got = clinical.auc_acc(task, y, s)
    assert got["auc"] == pytest.approx(expected["auc"]) and got["acc"] == pytest.approx(expected["acc"])


def test_the_whole_decathlon_runs_each_subset_in_its_folder_with_its_file(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        benchmark, "run_subset", lambda target, seconds, out, **kw: calls.append((target, seconds, out, kw))
    )
    sources = tmp_path / "npz"
    sources.mkdir()
    (sources / "breastmnist.npz").write_bytes(b"")
    benchmark.run_decathlon(
        list(benchmark.SUBSETS), 7200, tmp_path / "runs", source=str(sources), size=28, dataset="built", parallel=3
    )
    assert [c[0].subset for c in calls] == list(benchmark.SUBSETS) and all(c[1] == 7200 for c in calls)
    by_subset = {c[0].subset: c for c in calls}
    assert (
        by_subset["breastmnist"][0].source == str(sources / "breastmnist.npz")
        and by_subset["pathmnist"][0].source is None
    )
    assert by_subset["pathmnist"][2] == tmp_path / "runs" / "pathmnist" and by_subset["pathmnist"][3] == {"parallel": 3}
    assert by_subset["pathmnist"][0].dataset == "built"


def test_train_hf_is_found_in_the_checkout_or_the_current_folder_else_one_line(tmp_path, monkeypatch):
    from hfmed.benchmark import scheduler
    from hfmed.errors import UserError

    monkeypatch.setattr(scheduler, "CHECKOUT", tmp_path / "site-packages")  # a regular install
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="run it from the checkout's folder"):
        scheduler.train_script()
    (tmp_path / "train_hf.py").write_text("")
    assert scheduler.train_script() == tmp_path / "train_hf.py"


def test_a_test_opening_outside_the_final_evaluation_stops_the_benchmark(tmp_path):
    from hfmed.benchmark.protocol import check_test_openings

    evaluation, search = tmp_path / "evaluation/seed100", tmp_path / "search/wd/fold0"
    log = tmp_path / "splits.jsonl"

    def write(*lines):
        log.write_text("".join(json.dumps(line) + "\n" for line in lines))

    opened = {"split": "test", "run": str(evaluation.resolve()), "rank": 0}
    write({"split": "validation", "run": str(search.resolve())}, {"step": "selection", "winner": "wd"}, opened)
    assert check_test_openings(log, [evaluation]) == [opened]
    write({"split": "test", "run": str(search.resolve())}, {"step": "selection", "winner": "wd"}, opened)
    with pytest.raises(RuntimeError, match="outside the final evaluation"):
        check_test_openings(log, [evaluation])
    write(opened, {"step": "selection", "winner": "wd"})
    with pytest.raises(RuntimeError, match="before the selection"):
        check_test_openings(log, [evaluation])
    write({"step": "selection", "winner": "wd"})
    with pytest.raises(RuntimeError, match="left no record of reading test"):
        check_test_openings(log, [evaluation])


def test_a_measured_slowdown_cuts_the_plan_in_order_and_never_grows_it():
    sizes = {"train": 546, "validation": 78}
    setting = budget.Setting(space.SPACE, sizes, 2)  # the frozen tiers
    plan = budget.make_plan(3600, setting).as_dict()
    assert budget.replan(plan, setting, remaining_seconds=3600, slowdown=1.0) is None  # as fast as assumed: kept
    assert budget.replan(plan, setting, remaining_seconds=3600, slowdown=0.2) is None  # faster: kept, not grown
    slower = budget.replan(plan, setting, remaining_seconds=3600, slowdown=3.0)
    assert slower is not None and slower.estimated_seconds <= 3600 and slower.cut
    assert budget.plan_seconds(slower.as_dict(), setting, 3.0) == pytest.approx(slower.estimated_seconds)
    assert slower.epochs <= plan["epochs"] and slower.folds <= plan["folds"] and len(slower.seeds) <= len(plan["seeds"])
    assert set(slower.candidates) <= set(plan["candidates"])
    # 20x slower: no search left, and 30 epochs (100 x 20 would not fit an hour for even one seed).
    crawl = budget.replan(plan, setting, remaining_seconds=3600, slowdown=20.0)
    assert (crawl.epochs, crawl.folds, crawl.candidates, crawl.seeds) == (30, 0, ["wd_ls"], [100, 101])
    assert "30 epochs per run instead of 100" in crawl.cut and crawl.estimated_seconds <= 3600
    # 60x slower: below the smallest tier, the epochs the hour allows, not a run past it.
    fitted = budget.replan(plan, setting, remaining_seconds=3600, slowdown=60.0)
    assert (fitted.epochs, fitted.folds, fitted.seeds) == (5, 0, [100, 101]) and fitted.estimated_seconds <= 3600
    assert not any("over budget" in c for c in fitted.cut)
    # 300x slower: not even one epoch fits; one seed of one epoch, and the record says it is over budget.
    smallest = budget.replan(plan, setting, remaining_seconds=3600, slowdown=300.0)
    assert (smallest.epochs, smallest.folds, smallest.seeds) == (1, 0, [100]) and "over budget" in smallest.cut[-1]
    assert budget.replan(smallest.as_dict(), setting, remaining_seconds=3600, slowdown=300.0) is None  # nothing to cut


@pytest.mark.parametrize(
    "slots,candidates,folds",
    [(2, 3, 2), (2, 2, 1), (2, 1, 2), (1, 3, 1), (4, 2, 2), (16, 3, 5), (16, 4, 4), (2, 0, 2)],
)
def test_a_search_round_takes_the_folds_that_keep_every_slot_working(slots, candidates, folds):
    """Three candidates on two cores: two folds a round (three full waves), not one (a core idle for
    the third run); sixteen GPUs' slots with three candidates: five folds (one slot idle), not six."""
    from hfmed.benchmark.scheduler import folds_per_round

    assert folds_per_round(slots, candidates) == folds


def test_a_run_stopped_half_way_starts_afresh_and_a_finished_one_is_kept(tmp_path, monkeypatch):
    from hfmed.benchmark import scheduler

    script = tmp_path / "train_hf.py"  # stands in for train_hf.py: records what its folder held at start
    script.write_text(
        "import json, os, sys, pathlib\nout = pathlib.Path(sys.argv[sys.argv.index('--output_dir') + 1])\n"
        "out.mkdir(parents=True, exist_ok=True)\nheld = sorted(os.listdir(out))\n"
        "(out / 'results.json').write_text(json.dumps(held))\n"
    )
    monkeypatch.setattr(scheduler, "train_script", lambda: script)
    stopped, finished = tmp_path / "search/wd/fold2", tmp_path / "search/wd/fold1"
    (stopped / "checkpoint-40").mkdir(parents=True)  # what an interrupted run leaves
    finished.mkdir(parents=True)
    (finished / "results.json").write_text('"kept"')
    jobs = [scheduler.Job(stopped, []), scheduler.Job(finished, [])]
    status = scheduler.run_jobs(jobs, [scheduler.Slot(1)], poll=0.05)
    assert status == {stopped: "done", finished: "kept"}
    assert json.loads((stopped / "results.json").read_text()) == []  # nothing of the stopped run was left
    assert json.loads((finished / "results.json").read_text()) == "kept"


def test_the_scheduler_stops_every_run_when_the_watch_says_the_plan_changed(tmp_path, monkeypatch):
    from hfmed.benchmark import scheduler

    script = tmp_path / "train_hf.py"  # stands in for train_hf.py: reports an epoch, then would run long
    script.write_text(
        "import sys, time, pathlib\nout = pathlib.Path(sys.argv[sys.argv.index('--output_dir') + 1])\n"
        "out.mkdir(parents=True)\n(out / 'progress.json').write_text('{}')\ntime.sleep(60)\n"
    )
    monkeypatch.setattr(scheduler, "train_script", lambda: script)
    jobs = [scheduler.Job(tmp_path / f"run{i}", []) for i in range(3)]
    asked = []

    def watch() -> bool:  # the plan changes once the first run has reported
        asked.append(1)
        return (tmp_path / "run0" / "progress.json").is_file()

    status = scheduler.run_jobs(jobs, [scheduler.Slot(1)], poll=0.05, watch=watch)
    assert status == {job.out: "cancelled" for job in jobs} and asked
    assert not (tmp_path / "run1").exists()  # never started


def test_every_candidate_is_a_command_train_hf_takes_with_its_schedule_for_the_plans_epochs():
    from hfmed.training import parse_args

    cosine = space.Candidate("cosine", ("--arch", "resnet", "--lr_scheduler_type", "cosine"))
    for subset, candidates in (("breastmnist", (*space.SPACE, cosine)), ("adrenalmnist3d", space.SPACE_3D)):
        for candidate in candidates:
            argv = [*space.COMMON_FLAGS, "--subset", subset, "--num_train_epochs", "40", *candidate.run_flags(40)]
            _, _, recipe, args = parse_args(argv)
            assert args.num_train_epochs == 40
            if "--lr_scheduler_type" in candidate.flags:  # its own schedule: no step decay on top
                assert recipe.lr_decay_epochs == [] and args.lr_scheduler_type.value == "cosine"
            else:  # the preset's: x0.1 at half and three quarters of the plan's epochs
                assert recipe.lr_decay_epochs == [20, 30] and args.lr_scheduler_type.value == "constant"
