"""One subset, start to finish: plan, search by cross-validation, select, train the final seeds,
evaluate once on test. Every step is recorded in ``<out>/search.json``; a rerun of the same command
keeps every finished run and continues from the record (the plan is kept, spent time adds up).

The test split is opened by one step only. Search runs are train_hf.py cross-validation runs and
the final seeds are ``--eval_test false`` runs: neither opens test. The winner and the recipes the
final seeds rotate over are written into the record before any run on the official split starts;
once every seed has finished, one evaluation run per seed (``--model <seed> --do_train false``)
scores its saved model on validation and test, and :func:`hfmed.benchmark.final.evaluate`
averages them. Every run appends the splits it opens to
``<out>/splits.jsonl``; the protocol checks there that test was opened by evaluation runs only,
after the selection, before it reports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hfmed.benchmark import budget, final, selection
from hfmed.benchmark import space as space_mod
from hfmed.benchmark.scheduler import Job, Slot, folds_per_round, run_jobs, slots, train_script
from hfmed.benchmark.space import Candidate
from hfmed.errors import UserError

if TYPE_CHECKING:
    from hfmed.loaders.built import TaskInfo

RECORD_FILE = "search.json"
SPLIT_LOG = "splits.jsonl"


@dataclass
class BenchmarkResult:
    out: Path
    results: dict[str, Any]  # the final model's results.json
    record: dict[str, Any]  # the search record (search.json)


@dataclass(frozen=True)
class Target:
    """Which data: plain values, passed on to every train_hf.py run."""

    subset: str
    collection: str = "medmnist"
    dataset: str | None = None
    source: str | None = None
    size: int = 28
    task: str | None = None

    def flags(self) -> list[str]:
        flags = ["--subset", self.subset, "--collection", self.collection, "--size", str(self.size)]
        flags += ["--dataset", self.dataset] if self.dataset else []
        flags += ["--task", self.task] if self.task else []
        return flags


def run_subset(
    target: Target,
    budget_seconds: float,
    out: Path,
    *,
    space: tuple[Candidate, ...] | None = None,
    epoch_tiers: tuple[int, ...] = space_mod.EPOCH_TIERS,
    fold_tiers: tuple[int, ...] = space_mod.FOLD_TIERS,
    seed_tiers: tuple[int, ...] = space_mod.SEED_TIERS,
    final_seeds: tuple[int, ...] = space_mod.FINAL_SEEDS,
    search_min_epochs: int = space_mod.SEARCH_MIN_EPOCHS,
    parallel: int | None = None,
    extra_flags: tuple[str, ...] = (),
) -> BenchmarkResult:
    train_script()  # refused before anything is written when train_hf.py cannot be found
    out = Path(out)
    record = _load_record(out, target, budget_seconds)
    if record.get("complete") and (out / "results.json").is_file():
        return BenchmarkResult(out, json.loads((out / "results.json").read_text()), record)
    clock = _Clock(record["spent_seconds"], budget_seconds)
    pool = slots(parallel)
    info = _prepare_data(target)
    record["task_type"] = info.task
    record["cv_groups"] = group_column(target)
    record["slots"] = [{"threads": s.threads, "gpu": s.gpu} for s in pool]
    space = space or space_mod.for_data(info.volumetric)  # 3D networks for a 3D config
    setting = budget.Setting(
        space, dict(info.splits), len(pool), epoch_tiers, fold_tiers, final_seeds, seed_tiers, search_min_epochs
    )
    if record.get("plan") is None:
        record["plan"] = budget.make_plan(budget_seconds, setting).as_dict()
    missing = [n for n in record["plan"]["candidates"] if n not in {c.name for c in space}]
    if missing:  # a benchmark begun under another version's space: its runs cannot be redone alike
        raise UserError(
            f"{out} was planned with {', '.join(missing)}, not in this version's search space; resume it "
            "with the hfmed version that began it, or give a new --out"
        )
    run = _Run(out, record, clock, pool, info, setting, [*target.flags(), *extra_flags])
    run.save()
    try:
        members = None
        while members is None:  # a second pass only when the first runs' speed cut the plan
            chosen = [space_mod.by_name(space, name) for name in record["plan"]["candidates"]]
            rotation = _search(run, chosen)
            if rotation is not None:
                members = _final_runs(run, rotation)
        evaluations = _evaluation_runs(run, members)
        record["test_openings"] = check_test_openings(out / SPLIT_LOG, evaluations)
        results = final.evaluate(members, evaluations, out, record)
    except BaseException:
        _count_time_spent(out, clock)
        raise
    record["complete"] = True
    _save(out, record, clock)
    return BenchmarkResult(out, results, record)


def _count_time_spent(out: Path, clock: _Clock) -> None:
    """An interrupted benchmark's wall time, up to now, into its last saved record: a resumed run
    counts it against the budget, the runs it stopped half-way included (they run again)."""
    saved = out / RECORD_FILE
    if saved.is_file():
        _save(out, json.loads(saved.read_text()), clock)


#: The clock budget time is read from (a test may give another).
now = time.monotonic


class _Clock:
    """Budget time: what earlier sessions spent plus this session's wall time."""

    def __init__(self, spent_before: float, budget_seconds: float) -> None:
        self.started, self.before, self.budget = now(), spent_before, budget_seconds

    def spent(self) -> float:
        return self.before + now() - self.started

    def remaining(self) -> float:
        return self.budget - self.spent()

    def deadline(self, reserve: float) -> float:
        """A time.monotonic() value: when only ``reserve`` seconds of budget will be left."""
        return time.monotonic() + self.remaining() - reserve


@dataclass
class _Run:
    """One benchmark under way: its folder, record and clock, the slots its runs go to, its data,
    what its plans are made for, and the flags every run of it gets besides the schedule."""

    out: Path
    record: dict[str, Any]
    clock: _Clock
    pool: list[Slot]
    info: TaskInfo
    setting: budget.Setting
    flags: list[str]

    def run_args(self, candidate: Candidate) -> list[str]:
        """A run of ``candidate`` under the plan as it is now: every run's flags, then the
        candidate's own for the plan's epochs (its schedule included)."""
        epochs = self.record["plan"]["epochs"]
        return [
            *space_mod.COMMON_FLAGS,
            *self.flags,
            "--num_train_epochs",
            str(epochs),
            "--split_log",
            str((self.out / SPLIT_LOG).resolve()),
            *candidate.run_flags(epochs),
        ]

    def replan(self, slowdown: float) -> budget.Plan | None:
        """The plan cut to the time left at ``slowdown``, or None when it still fits."""
        return budget.replan(self.record["plan"], self.setting, self.clock.remaining(), slowdown)

    def save(self) -> None:
        _save(self.out, self.record, self.clock)


def _load_record(out: Path, target: Target, budget_seconds: float) -> dict[str, Any]:
    path = out / RECORD_FILE
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("target") != target.__dict__:
            raise UserError(
                f"{out} holds a benchmark of {record.get('target')}, not {target.__dict__}; "
                "choose another --out or the same data"
            )
        record["budget_seconds"] = budget_seconds  # a rerun may extend the budget; the plan stays as it was
        return record
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"--out {out} exists and holds no {RECORD_FILE}; give a new folder, or the folder of a benchmark to resume"
        )
    out.mkdir(parents=True, exist_ok=True)
    return {
        "target": target.__dict__,
        "budget_seconds": budget_seconds,
        "spent_seconds": 0.0,
        "plan": None,
        "rounds": [],
        "dropped": {},
        "skipped": [],
        "selection": None,
        "final": None,
        "complete": False,
    }


def _save(out: Path, record: dict[str, Any], clock: _Clock) -> None:
    record["spent_seconds"] = clock.spent()
    tmp = out / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out / RECORD_FILE)


def _prepare_data(target: Target) -> TaskInfo:
    """Build the config once here (not in parallel runs racing each other); its TaskInfo."""
    from hfmed import loaders, registry

    location = Path(target.dataset or target.collection)
    config = _config(target)
    folder = location / config
    if not (folder.is_dir() and any(folder.glob("*.parquet"))):
        if not target.source:
            raise UserError(
                f"{location} has no {config} build; build it with `hfmed build "
                f"{target.collection} {config} --out {location}` or pass --source"
            )
        from hfmed.writer import build_config

        build_config(registry.get(target.collection).create(config, target.source), location, progress=False)
    return loaders.task_info(str(location), config, target.task)


#: Columns that name a patient: where a build has one, the search's folds keep each patient in one fold.
PATIENT_COLUMNS = ("patient_id",)


def group_column(target: Target) -> str | None:
    """The patient column of the target's build, if it has one (MedIMeta's ``patient_id``)."""
    from hfmed.loaders.built import config_files, split_source

    names = split_source(config_files(target.dataset or target.collection, _config(target)), "train").schema.names
    return next((c for c in PATIENT_COLUMNS if c in names), None)


def _config(target: Target) -> str:
    from hfmed import registry

    return registry.get(target.collection).config_for(target.subset, target.size)


def _search(run: _Run, chosen: list[Candidate]) -> list[Candidate] | None:
    """Rounds of folds for the surviving candidates; as many folds per round as the slots allow,
    so every core works, and a drop check between rounds. While the first round runs, its first
    epochs calibrate the budget (:func:`_calibrate`); None when that cut the plan and the search
    must start again under the new one. When the planned search is over and its time measured,
    candidates the plan cut are searched after all while the time left fits them
    (:func:`_grow_search`). Returns the recipes the final seeds rotate over, the winner first
    (:func:`_select`)."""
    out, record = run.out, run.record
    plan = record["plan"]
    chosen = list(chosen)
    alive = [c for c in chosen if c.name not in record["dropped"]]
    scores: dict[str, dict[int, float]] = {}
    observed: dict[Path, tuple[float, float]] = {}  # per run, so that a kept run counts once
    while True:
        ended = _search_folds(run, chosen, alive, scores, observed)
        if ended is None:
            return None
        if ended or not plan["folds"]:
            break
        grown = _grow_search(run, chosen)
        if grown is None:
            break
        chosen.append(grown)
        alive = [c for c in alive if c.name not in record["dropped"]] + [grown]
    _collect(out, scores, chosen, plan["folds"])  # every finished fold, dropped candidates' too, for the record
    survivors = [c for c in alive if c.name not in record["dropped"]]
    # A grown candidate the budget stopped before its last fold stays out of the choice: the
    # planned candidates are compared on every fold, not on the few it reached.
    # (The planned leader is never dropped, so a planned candidate is always left to choose.)
    for c in list(survivors):
        entry = _grown(record, c)
        if entry is not None and len(scores.get(c.name, {})) < plan["folds"]:
            entry["unfinished"] = sorted(scores.get(c.name, {}))
            survivors.remove(c)
    return _select(run, chosen, survivors, scores)


def _search_folds(
    run: _Run,
    chosen: list[Candidate],
    alive: list[Candidate],
    scores: dict[str, dict[int, float]],
    observed: dict[Path, tuple[float, float]],
) -> bool | None:
    """Every fold of the plan for the ``alive`` candidates (finished runs kept): True when a round
    was skipped or stopped for the budget, False when the folds are done, None when the first
    epochs cut the plan. Drops hopeless candidates from ``alive`` as it goes."""
    out, record, clock, pool, info = run.out, run.record, run.clock, run.pool, run.info
    plan = record["plan"]
    pooled = info.splits["train"] + info.splits["validation"]
    train_images = -(-pooled * (plan["folds"] - 1) // plan["folds"]) if plan["folds"] else 0
    dearest = max(chosen, key=lambda c: c.cost)
    fold = 0
    while fold < plan["folds"] and len(alive) >= 2:  # one survivor: nothing left to compare
        # Folds per round: the slots shared among the candidates with runs still to do.
        pending = [c for c in alive if not (out / "search" / c.name / f"fold{fold}" / "results.json").is_file()]
        batch = list(range(fold, min(plan["folds"], fold + folds_per_round(len(pool), len(pending)))))
        slow = budget.slowdown(list(observed.values()))
        grouped = ["--cv_groups", record["cv_groups"]] if record.get("cv_groups") else []
        runs = [
            (
                c,
                Job(
                    out / "search" / c.name / f"fold{f}",
                    [
                        *run.run_args(c),
                        "--cv_folds",
                        str(plan["folds"]),
                        "--cv_fold",
                        str(f),
                        "--seed",
                        str(f),
                        *grouped,
                    ],
                    budget.run_seconds(c, train_images, plan["epochs"]),
                ),
            )
            for f in batch
            for c in alive
        ]
        jobs, costs = [j for _, j in runs], {j.out: c.cost for c, j in runs}
        reserve = budget.final_seconds(
            dearest, len(plan["seeds"]), info.splits["train"], plan["epochs"], len(pool), slow
        )
        needed = budget.wave_seconds([j.estimate * slow for j in jobs if not j.done], len(pool))
        if needed and needed + reserve > clock.remaining():
            _skip(
                record,
                fold,
                plan["folds"],
                alive,
                f"estimated {needed:.0f} s for the round and {reserve:.0f} s for the final "
                f"model, {clock.remaining():.0f} s left",
            )
            return True
        calibrating = record.get("calibration") is None
        status = run_jobs(
            jobs,
            pool,
            deadline=clock.deadline(reserve),
            watch=(lambda: record.get("calibration") is None and _calibrate(run, jobs, costs)) if calibrating else None,
        )
        if calibrating and record.get("calibration") is None:
            _calibrate(run, jobs, costs)  # runs that ended between two polls
        if calibrating and record.get("calibration", {}).get("replanned"):
            _discard_round(record, jobs, status)
            _save(out, record, clock)
            return None
        _check(status)
        observed.update(
            {j.out: (j.estimate, _read(j.out)["wall_time_seconds"]) for j in jobs if status[j.out] in ("done", "kept")}
        )
        record["slowdown"] = budget.slowdown(list(observed.values()))  # actual over estimated, for what follows
        record["rounds"] = [
            r for r in record["rounds"] if r["folds"] != batch or set(r["runs"]) != set(_names(jobs))
        ] + [{"folds": batch, "runs": {name: status[j.out] for name, j in zip(_names(jobs), jobs, strict=True)}}]
        fold = batch[-1] + 1
        _collect(out, scores, alive, fold)
        if any(s == "stopped" for s in status.values()):
            _skip(record, batch[0], plan["folds"], alive, "the search's share of the budget ran out during the round")
            return True
        if fold < plan["folds"]:  # after the last round there is nothing left to save by dropping
            # Only a candidate with folds still to run is dropped: one whose folds are all done
            # (a planned one, when a grown candidate runs) costs nothing more, and stays in the choice.
            _drop_hopeless(run, scores, alive, [c for c in alive if len(scores.get(c.name, {})) < plan["folds"]])
            alive[:] = [c for c in alive if c.name not in record["dropped"]]
        _save(out, record, clock)
    return False


def _names(jobs: list[Job]) -> list[str]:
    return [f"{j.out.parent.name}/{j.out.name}" for j in jobs]


def _grown(record: dict[str, Any], candidate: Candidate) -> dict[str, Any] | None:
    """The record's entry for ``candidate`` if the search was grown by it."""
    return next((g for g in record.get("search_grown", []) if g["candidate"] == candidate.name and g["searched"]), None)


def _grow_search(run: _Run, chosen: list[Candidate]) -> Candidate | None:
    """The next candidate the plan cut, added to the finished search when the time left holds its
    folds and the final seeds at the speed the search measured (never on the prior alone); the
    decision is recorded either way. AutoML spends its budget on search first: on BreastMNIST more
    seeds than four did not move the ensemble's AUC (BENCHMARKS.md), so time left goes here before
    it grows the ensemble."""
    record, clock, setting, info = run.record, run.clock, run.setting, run.info
    plan = record["plan"]
    names = {c.name for c in chosen}
    cut = [c for c in setting.space if c.name not in names]
    if not cut or record.get("calibration") is None:
        return None
    candidate, slow, slots = cut[0], record.get("slowdown", 1.0), len(run.pool)
    pooled, train = info.splits["train"] + info.splits["validation"], info.splits["train"]
    needed = budget.candidate_search_seconds(candidate, plan["folds"], pooled, plan["epochs"], slots, slow)
    dearest = max([*chosen, candidate], key=lambda c: c.cost)
    reserve = budget.final_seconds(dearest, len(plan["seeds"]), train, plan["epochs"], slots, slow)
    remaining = clock.remaining()
    fits = needed + reserve <= remaining
    entry = {
        "candidate": candidate.name,
        "searched": fits,
        "estimated_seconds": needed,
        "final_reserve_seconds": reserve,
        "remaining_seconds": remaining,
        "slowdown": slow,
        "why": (
            f"{remaining:.0f} s left after the planned search held its {plan['folds']} folds (~{needed:.0f} s) and "
            f"the final seeds (~{reserve:.0f} s) at the measured speed ({slow:.2f}x the prior)"
            if fits
            else f"not searched: its folds (~{needed:.0f} s) and the final seeds (~{reserve:.0f} s) "
            f"did not fit the {remaining:.0f} s left at the measured speed ({slow:.2f}x the prior)"
        ),
    }
    record["search_grown"] = [g for g in record.get("search_grown", []) if g["candidate"] != candidate.name] + [entry]
    if not fits:
        _save(run.out, record, clock)
        return None
    plan["candidates"].append(candidate.name)
    _save(run.out, record, clock)
    return candidate


def _progress(run: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run / "progress.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return None


def _calibrate(run: _Run, jobs: list[Job], costs: dict[Path, float], may_replan: bool = True) -> bool:
    """Learn the machine's speed from the first runs (each run's progress.json, :func:`_measure`):
    their start-up and seconds per epoch project the whole run, set against the prior estimate of
    it. If the plan no longer fits the time left at that speed, cut it (``replan``) and say why in
    the record; True then, so that the round is stopped and started again under the new plan (at
    most a few epochs of it lost). With ``may_replan`` False the speed is only recorded."""
    out, record = run.out, run.record
    epochs = record["plan"]["epochs"]
    samples = []
    for job in jobs:
        measured = _measure(_progress(job.out), epochs, finished=(job.out / "results.json").is_file())
        if measured is not None:
            cost = space_mod.Candidate("", (), costs[job.out])
            samples.append(
                {"run": str(job.out.relative_to(out)), **measured}
                | {"estimated_seconds": budget.run_seconds(cost, measured["rows"], epochs)}
            )
    if not samples:
        return False
    slowdown = sum(s["projected_seconds"] for s in samples) / sum(s["estimated_seconds"] for s in samples)
    before = {k: record["plan"][k] for k in ("epochs", "folds", "candidates", "seeds")}
    new = run.replan(slowdown) if may_replan else None
    record["slowdown"] = slowdown
    record["calibration"] = {
        "measured": samples,
        "slowdown": slowdown,
        "plan_before": before,
        "replanned": new is not None,
    }
    if new is not None:
        why = (
            f"the first runs took {slowdown:.2f}x the prior estimate, so the plan ({before['epochs']} epochs, "
            f"{before['folds']} folds, {len(before['candidates'])} candidates, "
            f"{len(before['seeds'])} seeds) no longer fitted the "
            f"time left; cut: {'; '.join(new.cut)}"
        )
        record["calibration"]["why"] = why
        record["skipped"].append({"replanned": True, "why": why})
        record["plan"] = {
            **new.as_dict(),
            "cut": record["plan"]["cut"]
            + [f"after measuring the first runs: {c}" for c in new.cut if c not in record["plan"]["cut"]],
        }
    return new is not None


#: Epochs a run must have trained after its first before its speed is trusted: the first pays
#: one-off costs (a cold page cache, the first evaluation and checkpoint): on BreastMNIST it once
#: took 1.8x a later epoch, and projected over 100 epochs it cut two candidates from a plan that fitted.
STEADY_EPOCHS = 2


def _measure(progress: dict[str, Any] | None, epochs: int, finished: bool) -> dict[str, Any] | None:
    """One run's projected time for ``epochs`` from its progress.json: its first epoch once, then
    the rate of the epochs after it (:data:`STEADY_EPOCHS` of them at least, or all it had when it
    finished). A plan too short to wait for them is read at the first epoch: waiting would read it
    only when its runs end. None while that is not yet known."""
    if not progress or progress.get("epoch", 0) < 1:
        return None
    finished = finished or epochs <= 1 + STEADY_EPOCHS
    startup, done, seconds = progress.get("train_started", 0.0), progress["epoch"], progress["seconds"]
    first = progress.get("first") or {}
    after_first = done - first.get("epoch", done)
    if after_first >= STEADY_EPOCHS or (finished and after_first >= 1):
        per_epoch = (seconds - first["seconds"]) / after_first
        # Not resumed: the first epoch (start-up and one-off costs included) counted once, as it was.
        # Resumed: its epochs before this process are unknown, so every epoch at the later rate.
        projected = (
            first["seconds"] + per_epoch * (epochs - first["epoch"])
            if first["epoch"] <= 1
            else startup + per_epoch * epochs
        )
    elif finished:  # too short (so far, or in all) to tell the first epoch from the rest
        per_epoch = (seconds - startup) / done
        projected = startup + per_epoch * epochs
    else:
        return None
    return {
        "epochs_done": done,
        "startup_seconds": startup,
        "seconds_per_epoch": per_epoch,
        "first_epoch_seconds": first.get("seconds"),
        "rows": progress["rows"],
        "projected_seconds": projected,
    }


def _discard_round(record: dict[str, Any], jobs: list[Job], status: dict[Path, str]) -> None:
    """The runs of a round the plan changed under: unfinished ones, and all of them when their
    epochs or folds no longer are the plan's (the benchmark's own folders, nothing else)."""
    import shutil

    def stale(args: list[str]) -> bool:
        folds = args[args.index("--cv_folds") + 1] if "--cv_folds" in args else None
        return float(args[args.index("--num_train_epochs") + 1]) != record["plan"]["epochs"] or (
            folds is not None and int(folds) != record["plan"]["folds"]
        )

    changed = any(stale(j.args) for j in jobs)
    for job in jobs:
        if changed or status.get(job.out) not in ("done", "kept"):
            shutil.rmtree(job.out, ignore_errors=True)
            job.log.unlink(missing_ok=True)


def _collect(out: Path, scores: dict[str, dict[int, float]], candidates: list[Candidate], folds: int) -> None:
    for c in candidates:
        scores.setdefault(c.name, {})
        for f in range(folds):
            run = out / "search" / c.name / f"fold{f}"
            if (run / "results.json").is_file():
                scores[c.name][f] = _fold_auc(run)


def _drop_hopeless(
    run: _Run, scores: dict[str, dict[int, float]], alive: list[Candidate], droppable: list[Candidate]
) -> None:
    """Stop searching candidates far below the leader, unless one still raises the leader's score
    as its partner in the mix (:func:`selection.hopeless`); those kept so are recorded too."""
    record = run.record
    names = [c.name for c in alive]
    folds = selection.shared_folds(scores, names)
    may_drop = {c.name for c in droppable}
    behind = selection.hopeless(scores, names)
    if not behind:
        return
    predictions, auc = _held_out(run, names, folds)
    dropped = selection.hopeless(scores, names, predictions, auc)
    leader, leader_mean = selection.ranking(scores, names)[0]
    kept = record.setdefault("kept_as_partner", {})
    for name in [n for n in behind if n not in dropped and n in may_drop]:
        kept[name] = {
            "after_folds": folds,
            "mean_auc": selection.mean_on(scores[name], folds),
            "leader": leader,
            "leader_auc": selection.mix_score(predictions, [leader], folds, auc),
            "pair_auc": selection.mix_score(predictions, [leader, name], folds, auc),
        }
    for name in [n for n in dropped if n in may_drop]:
        kept.pop(name, None)  # kept after earlier folds, no help to the leader after these
        record["dropped"][name] = {
            "after_folds": folds,
            "mean_auc": selection.mean_on(scores[name], folds),
            "leader_mean_auc": leader_mean,
        }


def _skip(record: dict[str, Any], fold: int, folds: int, alive: list[Candidate], why: str) -> None:
    entry = {"folds": list(range(fold, folds)), "candidates": [c.name for c in alive], "why": why}
    if entry not in record["skipped"]:
        record["skipped"].append(entry)


def _check(status: dict[Path, str]) -> None:
    failed = [p for p, s in status.items() if s == "failed"]
    if failed:
        raise UserError(
            f"training run {failed[0]} failed; see {failed[0].with_suffix('.log')}, fix the "
            "cause, then rerun the same command to resume"
        )


def _read(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text())


def _search_run(run: Path) -> tuple[dict[str, Any], selection.FoldPredictions]:
    """A search run's results and held-out (labels, probabilities), after checking that it never
    touched the test split."""
    results = _read(run)
    with np.load(run / "predictions.npz") as npz:
        touched = [name for name in npz.files if not name.startswith("validation_")]
        held_out = npz["validation_labels"], npz["validation_scores"]
    if results.get("test") is not None or touched or not results.get("cross_validation"):
        raise RuntimeError(
            f"{run} is a search run but holds test results ({touched or 'test'}); the protocol forbids it"
        )
    return results, held_out


def _fold_auc(run: Path) -> float:
    return float(_search_run(run)[0]["validation"]["auc"])


def _held_out(
    run: _Run, names: list[str], folds: list[int]
) -> tuple[dict[str, dict[int, selection.FoldPredictions]], selection.Score]:
    """The search runs' held-out predictions on ``folds``, and the task's AUC to score them by."""
    from hfmed import metrics

    task = run.record["task_type"]

    def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
        return metrics.compute(task, labels, probabilities)["auc"]

    return {n: {f: _search_run(run.out / "search" / n / f"fold{f}")[1] for f in folds} for n in names}, auc


def _mix(run: _Run, ranked: list[str], folds: list[int]) -> dict[str, Any]:
    """The recipes the final seeds rotate over: greedy ensemble selection on the out-of-fold
    predictions of the ranked survivors, one pick per planned seed, cut to the shortest run of
    picks with the best score. On BreastMNIST's folds, two recipes' average beat two seeds of the
    winner (BENCHMARKS.md); when one candidate is best alone, the rotation is the winner only."""
    predictions, auc = _held_out(run, ranked, folds)
    steps = selection.ensemble_selection(predictions, ranked, folds, len(run.record["plan"]["seeds"]), auc)
    return {
        "steps": [{"candidate": name, "mean_fold_auc": score} for name, score in steps],
        "rotation": selection.best_prefix(steps),
    }


def _select(
    run: _Run, chosen: list[Candidate], alive: list[Candidate], scores: dict[str, dict[int, float]]
) -> list[Candidate]:
    """The winner, and the recipes the final seeds rotate over (the winner first), recorded
    before any run on the official split."""
    out, record, clock = run.out, run.record, run.clock
    if not record.get("selection"):
        names = [c.name for c in alive]
        compared = [n for n in names if scores.get(n)]
        folds = selection.shared_folds(scores, compared) if compared else []
        if compared:
            ranked = selection.ranking(scores, compared)
            winner = ranked[0][0]
            why = "highest mean held-out fold AUC on the folds every survivor finished"
        else:
            ranked, winner = [], names[0]
            why = "no fold finished (no search in the plan, or no time for one): the first candidate of the space"
        record["selection"] = {
            "winner": winner,
            "why": why,
            "folds_compared": folds,
            "ranking": [{"candidate": n, "mean_fold_auc": m} for n, m in ranked],
            "fold_auc": {n: {str(f): a for f, a in s.items()} for n, s in scores.items()},
            "mix": _mix(run, [n for n, _ in ranked], folds) if len(ranked) > 1 and folds else None,
            "decided_after_seconds": clock.spent(),
        }
        _save(out, record, clock)  # the choice is on disk before the official split is trained on
        with (out / SPLIT_LOG).open("a", encoding="utf-8") as log:
            log.write(json.dumps({"step": "selection", "winner": winner, "rotation": rotation_names(record)}) + "\n")
    return [next(c for c in chosen if c.name == name) for name in rotation_names(record)]


def rotation_names(record: dict[str, Any]) -> list[str]:
    """The recipes the final seeds rotate over (seed i trains the (i mod n)-th): the mix the
    selection recorded, or the winner alone (no search, one survivor, or a record from before the
    mix)."""
    mix = record["selection"].get("mix")
    return list(mix["rotation"]) if mix else [record["selection"]["winner"]]


def _average(rotation: list[Candidate]) -> Candidate:
    """The rotation as one candidate of its mean cost, for the final seeds' time estimates."""
    return Candidate("+".join(c.name for c in rotation), (), sum(c.cost for c in rotation) / len(rotation))


def _final_runs(run: _Run, rotation: list[Candidate]) -> list[Path] | None:
    """The final seeds on the official split, test not opened: the i-th planned seed trains the
    rotation's (i mod n)-th recipe. With no search before them they are the first runs, and their
    first epochs calibrate the budget: None when that cut the plan; the time they then leave may
    take more seeds, trained after them."""
    out, record, clock, pool, info = run.out, run.record, run.clock, run.pool, run.info
    winner, average = rotation[0], _average(rotation)
    if record.get("seeds_grown") is None:  # decided once, so that a resumed run keeps its seeds
        _grow_seeds(run, average)
    seeds = list(record["plan"]["seeds"])
    started = clock.spent()
    recipes: dict[Path, Candidate] = {}

    def seed_jobs(chosen: list[int]) -> list[Job]:
        epochs, slowdown = record["plan"]["epochs"], record.get("slowdown", 1.0)
        jobs = []
        for s in chosen:
            recipe = rotation[record["plan"]["seeds"].index(s) % len(rotation)]
            estimate = budget.run_seconds(recipe, info.splits["train"], epochs, slowdown)
            flags = [*run.run_args(recipe), "--eval_test", "false", "--seed", str(s)]
            jobs.append(Job(out / "final" / f"seed{s}", flags, estimate))
            recipes[jobs[-1].out] = recipe
        return jobs

    jobs = seed_jobs(seeds)
    done = [j for j in jobs if j.done]
    while (
        len(jobs) > 1
        and len(jobs) > len(done)
        and budget.wave_seconds([j.estimate for j in jobs if not j.done], len(pool)) > clock.remaining()
    ):
        dropped = jobs.pop()
        record["skipped"].append(
            {"final_seed": int(dropped.out.name[4:]), "why": f"{clock.remaining():.0f} s of budget left"}
        )
    calibrating, costs = record.get("calibration") is None, {j.out: recipes[j.out].cost for j in jobs}
    status = run_jobs(
        jobs,
        pool,
        watch=(lambda: record.get("calibration") is None and _calibrate(run, jobs, costs)) if calibrating else None,
    )
    if calibrating and record.get("calibration") is None:
        # Seeds too short to be read while they ran: their speed, for the seeds grown below. They
        # are done, so nothing of theirs is left to cut (a replan now would discard finished work).
        _calibrate(run, jobs, costs, may_replan=False)
    if calibrating and (record.get("calibration") or {}).get("replanned"):
        _discard_round(record, jobs, status)
        _save(out, record, clock)
        return None
    _check(status)
    if (record["seeds_grown"] or {}).get("not_grown") and record.get("calibration") and len(jobs) == len(seeds):
        _grow_seeds(run, average, trained=len(jobs))  # on the speed these seeds measured
        extra = seed_jobs(record["plan"]["seeds"][len(jobs) :])
        if extra:
            _check(run_jobs(extra, pool))
            jobs += extra
    record["final"] = {
        "winner": winner.name,
        "flags": list(winner.flags),
        "seeds": [int(j.out.name[4:]) for j in jobs],
        "members": [str(j.out.relative_to(out)) for j in jobs],
        "recipes": {j.out.name: recipes[j.out].name for j in jobs},
        "started_after_seconds": started,
    }
    _save(out, record, clock)
    for job in jobs:
        _untested(job.out)
    return [j.out for j in jobs]


def _grow_seeds(run: _Run, recipe: Candidate, trained: int = 0) -> None:
    """More final seeds when the time left allows them at the measured speed (recorded either way),
    beside the ``trained`` ones already done. Only a measured speed counts: with no search before
    them, the final seeds are the first runs, and the prior alone does not add any."""
    record, clock, final_seeds = run.record, run.clock, run.setting.seeds
    planned = len(record["plan"]["seeds"])
    if record.get("calibration") is None:
        record["seeds_grown"] = {"planned": planned, "seeds": planned, "not_grown": "no run had measured the speed"}
        return
    n = trained + budget.grown_seeds(
        recipe,
        planned - trained,
        len(final_seeds) - trained,
        run.info.splits["train"],
        record["plan"]["epochs"],
        len(run.pool),
        clock.remaining(),
        record.get("slowdown", 1.0),
    )
    record["seeds_grown"] = {"planned": planned, "seeds": n, "remaining_seconds": clock.remaining()}
    if n > planned:
        record["plan"]["seeds"] = list(final_seeds[:n])
        after = f"the first {trained} final seeds" if trained else "the search"
        record["seeds_grown"]["why"] = (
            f"{clock.remaining():.0f} s of budget left after {after} fit {n} seeds at the measured speed "
            f"({record.get('slowdown', 1.0):.2f}x the prior), not only the {planned} planned"
        )


def _evaluation_runs(run: _Run, members: list[Path]) -> list[Path]:
    """The one step that opens test: each final seed's saved model (its checkpoint chosen on
    validation) scored on validation and test, as ``--model <seed> --do_train false``."""
    out, record, clock, pool = run.out, run.record, run.clock, run.pool
    recipes = final.member_recipes(record, members)
    jobs = [
        Job(
            out / "evaluation" / member.name,
            [
                *run.run_args(space_mod.by_name(run.setting.space, recipes[member.name])),
                "--model",
                str(member.resolve()),
                "--do_train",
                "false",
            ],
        )
        for member in members
    ]
    status = run_jobs(jobs, pool)
    _check(status)
    record["evaluation"] = {"runs": [str(j.out.relative_to(out)) for j in jobs], "started_after_seconds": clock.spent()}
    _save(out, record, clock)
    return [j.out for j in jobs]


def check_test_openings(log: Path, evaluations: list[Path]) -> list[dict[str, Any]]:
    """Every opening of test in the benchmark's split log, checked: by an evaluation run only,
    after the selection was recorded, and by every evaluation run. Returns the openings."""
    lines = (
        [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        if log.is_file()
        else []
    )
    selected = next((i for i, line in enumerate(lines) if line.get("step") == "selection"), None)
    allowed = {str(p.resolve()) for p in evaluations}
    openings = [(i, line) for i, line in enumerate(lines) if line.get("split") == "test"]
    for i, line in openings:
        if line["run"] not in allowed or selected is None or i < selected:
            raise RuntimeError(
                f"{line['run']} opened the test split "
                f"{'before the selection' if line['run'] in allowed else 'outside the final evaluation'}; "
                f"the protocol forbids it ({log})"
            )
    missing = allowed - {line["run"] for _, line in openings}
    if missing:
        raise RuntimeError(
            f"the evaluation run(s) {', '.join(sorted(missing))} left no record of reading test in {log}"
        )
    return [line for _, line in openings]


def _untested(run: Path) -> None:
    """A final seed's run must hold no test figures or predictions: it never opened test."""
    with np.load(run / "predictions.npz") as npz:
        touched = [name for name in npz.files if not name.startswith("validation_")]
    if _read(run).get("test") is not None or touched:
        raise RuntimeError(
            f"{run} is a final seed's training run but holds test results "
            f"({touched or 'test'}); the protocol forbids it"
        )
