"""The wall-time budget: how long a run should take, and the plan that fits the budget.

Estimates start from a prior rate (the small ResNet trains 170-206 images/s on one CPU thread at
28 px, BENCHMARKS.md; 150 is used, with a fixed start-up per run) and are corrected by what the
runs of this benchmark actually took, so a GPU or a busier machine is learned after one round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from hfmed.benchmark.space import Candidate

PRIOR_IMAGES_PER_SECOND = 150.0
STARTUP_SECONDS = 20.0
#: Time kept back from the search for the final seeds and the evaluation (when nothing else says).
EVALUATION_SECONDS = 30.0


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


def final_seconds(
    candidate: Candidate, seeds: int, train: int, epochs: int, slots: int, slowdown: float = 1.0
) -> float:
    return wave_seconds([run_seconds(candidate, train, epochs, slowdown)] * seeds, slots) + EVALUATION_SECONDS


def make_plan(
    budget_seconds: float,
    space: tuple[Candidate, ...],
    sizes: dict[str, int],
    slots: int,
    epoch_tiers: tuple[int, ...],
    fold_tiers: tuple[int, ...],
    seeds: tuple[int, ...],
    seed_tiers: tuple[int, ...],
) -> Plan:
    """The fullest protocol whose estimate fits the budget.

    Cuts, in this order until it fits: candidates from the end of the space, then final seeds,
    then folds, then epochs; with one candidate left there is nothing to search. If even the
    smallest protocol does not fit, it is planned anyway and the record says it is over budget.
    """
    pooled, train = sizes["train"] + sizes["validation"], sizes["train"]
    ladder = []
    for epochs in epoch_tiers:
        for folds in fold_tiers:
            for n_seeds in seed_tiers:
                for n in range(len(space), 1, -1):
                    ladder.append((epochs, folds, n, n_seeds))
        ladder.append((epochs, 0, 1, seed_tiers[-1]))
    ladder.append((epoch_tiers[-1], 0, 1, 1))
    for epochs, folds, n, n_seeds in ladder:
        chosen = list(space[:n])
        # The final model's recipe is not known yet: reserve time for the dearest candidate.
        dearest = max(chosen, key=lambda c: c.cost)
        estimate = search_seconds(chosen, folds, pooled, epochs, slots) + final_seconds(
            dearest, n_seeds, train, epochs, slots
        )
        if estimate <= budget_seconds or (epochs, folds, n, n_seeds) == ladder[-1]:
            break
    plan = Plan(epochs, folds, [c.name for c in chosen], list(seeds[:n_seeds]), estimate)
    if n < len(space):
        plan.cut.append(f"candidates {', '.join(c.name for c in space[n:])} not searched")
    if n_seeds < seed_tiers[0]:
        plan.cut.append(f"{n_seeds} final seed(s) instead of {seed_tiers[0]}")
    if folds and folds < fold_tiers[0]:
        plan.cut.append(f"{folds} folds instead of {fold_tiers[0]}")
    if folds == 0:
        plan.cut.append("no cross-validation: one candidate only")
    if epochs < epoch_tiers[0]:
        plan.cut.append(f"{epochs} epochs per run instead of {epoch_tiers[0]}")
    if estimate > budget_seconds:
        plan.cut.append(
            f"over budget: even the smallest protocol is estimated at {estimate:.0f} s against {budget_seconds:.0f} s"
        )
    return plan


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
