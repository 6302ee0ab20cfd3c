"""The wall-time budget: how long a run should take, and the plan that fits the budget.

Estimates start from a prior rate (the small ResNet trains 170-206 images/s on one CPU thread at
28 px, BENCHMARKS.md; 150 is used, with a fixed start-up per run) and are corrected by what the
runs of this benchmark actually take: the first round's runs report their epochs as they go
(progress.json), and when that speed no longer lets the plan fit, :func:`replan` cuts it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

from hfmed.benchmark import space as space_mod
from hfmed.benchmark.space import Candidate

PRIOR_IMAGES_PER_SECOND = 150.0
STARTUP_SECONDS = 20.0
#: Time kept back from the search for the final seeds and the evaluation (when nothing else says).
EVALUATION_SECONDS = 30.0


@dataclass(frozen=True)
class Setting:
    """What a plan is made for: the candidates in order of preference, the data's split sizes, the
    runs that go side by side, and the tiers the budget may cut epochs, folds and seeds to."""

    space: tuple[Candidate, ...]
    sizes: dict[str, int]
    slots: int
    epoch_tiers: tuple[int, ...] = space_mod.EPOCH_TIERS
    fold_tiers: tuple[int, ...] = space_mod.FOLD_TIERS
    seeds: tuple[int, ...] = space_mod.FINAL_SEEDS
    seed_tiers: tuple[int, ...] = space_mod.SEED_TIERS
    search_min_epochs: int = space_mod.SEARCH_MIN_EPOCHS


@dataclass
class Plan:
    epochs: int
    folds: int  # 0: no search (one candidate left)
    candidates: list[str]
    seeds: list[int]
    estimated_seconds: float
    cut: list[str] = field(default_factory=list)  # what the budget removed, in words

    def as_dict(self) -> dict:
        return asdict(self)


def run_seconds(candidate: Candidate, train_images: int, epochs: int, slowdown: float = 1.0) -> float:
    """Expected wall time of one train_hf.py run: training plus start-up and evaluation."""
    return (train_images * epochs * candidate.cost / PRIOR_IMAGES_PER_SECOND + STARTUP_SECONDS) * slowdown


def wave_seconds(durations: Iterable[float], slots: int) -> float:
    """Wall time of jobs spread over ``slots`` parallel slots (never less than the longest job)."""
    durations = list(durations)
    if not durations:
        return 0.0
    return max(max(durations), sum(durations) / max(slots, 1))


def search_seconds(
    candidates: list[Candidate], folds: int, pooled: int, epochs: int, slots: int, slowdown: float = 1.0
) -> float:
    if folds == 0:
        return 0.0
    per_fold = [run_seconds(c, math.ceil(pooled * (folds - 1) / folds), epochs, slowdown) for c in candidates]
    return folds * wave_seconds(per_fold, slots)


def candidate_search_seconds(
    candidate: Candidate, folds: int, pooled: int, epochs: int, slots: int, slowdown: float = 1.0
) -> float:
    """One candidate's folds on their own (a candidate added to a finished search): as many folds
    side by side as the slots allow, in rounds."""
    per_fold = run_seconds(candidate, math.ceil(pooled * (folds - 1) / folds), epochs, slowdown)
    return math.ceil(folds / max(slots, 1)) * per_fold


def final_seconds(
    candidate: Candidate, seeds: int, train: int, epochs: int, slots: int, slowdown: float = 1.0
) -> float:
    """The final seeds' training, then one evaluation run per seed (mostly start-up), then scoring."""
    training = wave_seconds([run_seconds(candidate, train, epochs, slowdown)] * seeds, slots)
    return training + wave_seconds([STARTUP_SECONDS * slowdown] * seeds, slots) + EVALUATION_SECONDS


def fitted_epochs(
    candidate: Candidate, seeds: int, train: int, slots: int, budget_seconds: float, slowdown: float = 1.0
) -> int:
    """The most epochs (at least 1) with which ``seeds`` final runs of ``candidate`` fit the budget:
    for a subset too large for the smallest epoch tier (PathMNIST's 90,000 images at 15 epochs are
    2.5 hours of one CPU thread), fewer epochs rather than a run past the budget."""
    one_epoch = final_seconds(candidate, seeds, train, 1, slots, slowdown)
    per_epoch = final_seconds(candidate, seeds, train, 2, slots, slowdown) - one_epoch  # the estimate is linear
    return max(1, 1 + math.floor((budget_seconds - one_epoch) / per_epoch)) if per_epoch > 0 else 1


def grown_seeds(
    candidate: Candidate,
    planned: int,
    most: int,
    train: int,
    epochs: int,
    slots: int,
    remaining_seconds: float,
    slowdown: float = 1.0,
) -> int:
    """How many final seeds the time left allows, from ``planned`` up to ``most``: time the search
    did not use (candidates dropped early, a faster machine than the prior) goes into a larger
    ensemble instead of being left on the table."""
    n = planned
    while n < most and final_seconds(candidate, n + 1, train, epochs, slots, slowdown) <= remaining_seconds:
        n += 1
    return n


def make_plan(budget_seconds: float, setting: Setting, slowdown: float = 1.0) -> Plan:
    """The fullest protocol whose estimate fits the budget (runs ``slowdown`` times the prior estimate).

    Cuts, in this order until it fits: candidates from the end of the space, then final seeds,
    then folds, then epochs down to ``search_min_epochs``; then the search itself (one candidate
    left, nothing to compare), and epochs again from the most. Below the smallest epoch tier, the
    epochs are fitted to the budget (:func:`fitted_epochs`); if even one epoch does not fit, it is
    planned anyway and the record says it is over budget.
    """
    space, slots, seed_tiers, epoch_tiers = setting.space, setting.slots, setting.seed_tiers, setting.epoch_tiers
    pooled, train = setting.sizes["train"] + setting.sizes["validation"], setting.sizes["train"]
    # A search at any tier from search_min_epochs up comes before no search at all: ranking recipes
    # is the protocol's point, and past 30 epochs more of them changed little on BreastMNIST.
    ladder = [
        (epochs, folds, n, n_seeds)
        for epochs in epoch_tiers
        if epochs >= setting.search_min_epochs
        for folds in setting.fold_tiers
        for n_seeds in seed_tiers
        for n in range(len(space), 1, -1)
    ]
    ladder += [(epochs, 0, 1, seed_tiers[-1]) for epochs in epoch_tiers]
    ladder.append((epoch_tiers[-1], 0, 1, 1))
    for epochs, folds, n, n_seeds in ladder:
        chosen = list(space[:n])
        # The final model's recipe is not known yet: reserve time for the dearest candidate.
        dearest = max(chosen, key=lambda c: c.cost)
        estimate = search_seconds(chosen, folds, pooled, epochs, slots, slowdown) + final_seconds(
            dearest, n_seeds, train, epochs, slots, slowdown
        )
        if estimate <= budget_seconds or (epochs, folds, n, n_seeds) == ladder[-1]:
            break
    if estimate > budget_seconds:  # no tier fits: one candidate, as many epochs as the budget allows
        chosen, folds, n = list(space[:1]), 0, 1
        fitted = [
            (s, min(epochs, fitted_epochs(chosen[0], s, train, slots, budget_seconds, slowdown)))
            for s in (seed_tiers[-1], 1)
        ]
        fitting = [
            (s, e) for s, e in fitted if final_seconds(chosen[0], s, train, e, slots, slowdown) <= budget_seconds
        ]
        # epochs before seeds, as the cuts' order has it; when nothing fits, the least over budget
        n_seeds, epochs = max(fitting, key=lambda pair: (pair[1], pair[0])) if fitting else (1, 1)
        estimate = final_seconds(chosen[0], n_seeds, train, epochs, slots, slowdown)
    plan = Plan(epochs, folds, [c.name for c in chosen], list(setting.seeds[:n_seeds]), estimate)
    if n < len(space):
        plan.cut.append(f"candidates {', '.join(c.name for c in space[n:])} not searched")
    if n_seeds < seed_tiers[0]:
        plan.cut.append(f"{n_seeds} final seed(s) instead of {seed_tiers[0]}")
    if folds and folds < setting.fold_tiers[0]:
        plan.cut.append(f"{folds} folds instead of {setting.fold_tiers[0]}")
    if folds == 0:
        plan.cut.append("no cross-validation: one candidate only")
    if epochs < epoch_tiers[0]:
        plan.cut.append(f"{epochs} epochs per run instead of {epoch_tiers[0]}")
    if estimate > budget_seconds:
        plan.cut.append(
            f"over budget: even the smallest protocol is estimated at {estimate:.0f} s against {budget_seconds:.0f} s"
        )
    return plan


def plan_seconds(plan: dict, setting: Setting, slowdown: float = 1.0) -> float:
    """What ``plan`` (a Plan's dict) takes from its start, its runs ``slowdown`` times the prior estimate."""
    chosen = [c for c in setting.space if c.name in plan["candidates"]]
    dearest = max(chosen, key=lambda c: c.cost)
    pooled, train = setting.sizes["train"] + setting.sizes["validation"], setting.sizes["train"]
    slots = setting.slots
    return search_seconds(chosen, plan["folds"], pooled, plan["epochs"], slots, slowdown) + final_seconds(
        dearest, len(plan["seeds"]), train, plan["epochs"], slots, slowdown
    )


def replan(plan: dict, setting: Setting, remaining_seconds: float, slowdown: float) -> Plan | None:
    """The plan cut to what ``remaining_seconds`` allows at the measured ``slowdown``, or None when
    it still fits (or nothing can be cut). It only cuts, never grows: the same order as
    :func:`make_plan` (candidates, seeds, folds, epochs), starting from the plan as it is."""
    if plan_seconds(plan, setting, slowdown) <= remaining_seconds:
        return None
    folds = tuple(f for f in setting.fold_tiers if 0 < f < plan["folds"])
    narrowed = replace(
        setting,
        space=tuple(c for c in setting.space if c.name in plan["candidates"]),
        epoch_tiers=(plan["epochs"], *(e for e in setting.epoch_tiers if e < plan["epochs"])),
        fold_tiers=((plan["folds"], *folds) if plan["folds"] else ()),
        seed_tiers=(len(plan["seeds"]), *(s for s in setting.seed_tiers if s < len(plan["seeds"]))),
    )
    new = make_plan(remaining_seconds, narrowed, slowdown)
    if (new.epochs, new.folds, new.candidates, new.seeds) == (
        plan["epochs"],
        plan["folds"],
        plan["candidates"],
        plan["seeds"],
    ):
        return None
    return new


def slowdown(observed: list[tuple[float, float]]) -> float:
    """How much slower than estimated the finished runs were: (estimated, actual) pairs -> ratio."""
    if not observed:
        return 1.0
    estimated = sum(e for e, _ in observed)
    actual = sum(a for _, a in observed)
    return actual / estimated if estimated > 0 else 1.0


def parse_budget(text: str) -> float:
    """'90s', '45m', '1h', '1.5h' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    unit = units.get(text[-1:], None)
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"--budget {text!r} is not a duration; write e.g. 90s, 45m, 1h or 1.5h") from None
    if not value > 0 or math.isinf(value):
        raise ValueError(f"--budget must be a positive duration, got {text!r}")
    return value
