"""The search space: the recipes a subset's candidates are drawn from, and the schedule per epochs.

Frozen after development on BreastMNIST (real) and generated data; the README says why each is in.
Every candidate is the published MedMNIST protocol (``--preset medmnist``: Adam 1e-3, batch 128,
x0.1 at half and three quarters of training, best epoch by validation AUC) from scratch with a
ResNet, plus a few flags. Candidates are in order of preference: when the budget cuts candidates
it cuts from the end, and a tie in the search goes to the earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    name: str
    flags: tuple[str, ...]
    #: training seconds per image-epoch relative to the small ResNet (BENCHMARKS.md: 63-66 images/s
    #: for ResNet-18 widths against 170-200 for the small one, one thread each)
    cost: float = 1.0


REGULARISED = ("--weight_decay", "0.05", "--label_smoothing_factor", "0.1")

SPACE: tuple[Candidate, ...] = (
    # Won 5-fold cross-validation on BreastMNIST against the published protocol (BENCHMARKS.md).
    Candidate("wd_ls", ("--arch", "resnet", "--arch_size", "small", *REGULARISED)),
    # The published protocol itself, so the search can never do worse than choosing it.
    Candidate("published", ("--arch", "resnet", "--arch_size", "small")),
    # Larger subsets (Path, Derma, OCT) have room for augmentation that BreastMNIST's 546 images did not reward.
    Candidate(
        "wd_ls_flip_crop",
        ("--arch", "resnet", "--arch_size", "small", *REGULARISED, "--augment", "flip_crop"),
        cost=1.05,
    ),
    # ResNet-18 widths: the published rows' network; three times the cost, so last.
    Candidate("wd_ls_resnet18", ("--arch", "resnet", "--arch_size", "base", *REGULARISED), cost=2.9),
)

#: Epochs per run, most first; the budget picks the largest that fits. The published 100 first;
#: on BreastMNIST the best epoch of 22 runs was 13-52, so 50 loses little.
EPOCH_TIERS: tuple[int, ...] = (100, 50, 30, 15)
#: Folds of train+validation pooled, most first (5 as in the BreastMNIST study; 3 when time is short).
FOLD_TIERS: tuple[int, ...] = (5, 3)
#: Seeds of the final model, most first; fold i is trained with seed i, so the final seeds are new.
FINAL_SEEDS: tuple[int, ...] = (100, 101, 102, 103)
SEED_TIERS: tuple[int, ...] = (4, 2)
COMMON_FLAGS: tuple[str, ...] = ("--preset", "medmnist", "--disable_tqdm", "true")


def schedule_flags(epochs: int) -> list[str]:
    """The preset's step decay at 50% and 75% of training, for a run of ``epochs``."""
    return ["--num_train_epochs", str(epochs), "--lr_decay_epochs", f"{epochs * 0.5:g}", f"{epochs * 0.75:g}"]


def by_name(space: tuple[Candidate, ...], name: str) -> Candidate:
    for candidate in space:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
