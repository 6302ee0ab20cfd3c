"""The search space: the recipes a subset's candidates are drawn from, and the schedule per epochs.

Frozen after development on BreastMNIST (real) and generated data; the README says why each is in.
Every candidate is the published MedMNIST protocol (``--preset medmnist``: Adam 1e-3, batch 128,
x0.1 at half and three quarters of training, best epoch by validation AUC) from scratch with a
ResNet, plus a few flags; a candidate that names its own schedule (``--lr_scheduler_type``) has
it instead of the step decay. Candidates are in order of preference: when the budget cuts candidates
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

    def run_flags(self, epochs: int) -> tuple[str, ...]:
        """Its flags in a run of ``epochs``: the preset's step decay at 50% and 75% of training
        unless it names a schedule of its own (train_hf.py refuses both together)."""
        if "--lr_scheduler_type" in self.flags:
            return self.flags
        return (*self.flags, "--lr_decay_epochs", f"{epochs * 0.5:g}", f"{epochs * 0.75:g}")


REGULARISED = ("--weight_decay", "0.05", "--label_smoothing_factor", "0.1")

SPACE: tuple[Candidate, ...] = (
    # Won 5-fold cross-validation on BreastMNIST against the published protocol (BENCHMARKS.md).
    Candidate("wd_ls", ("--arch", "resnet", "--arch_size", "small", *REGULARISED)),
    # The published protocol itself, so the search can never do worse than choosing it.
    Candidate("published", ("--arch", "resnet", "--arch_size", "small")),
    # Augmentation, for the larger subsets (Path, Derma, OCT); it also won BreastMNIST's search in the
    # first four 2-hour runs, though one seed of it against another differed as much as the recipes did.
    Candidate(
        "wd_ls_flip_crop",
        ("--arch", "resnet", "--arch_size", "small", *REGULARISED, "--augment", "flip_crop"),
        cost=1.05,
    ),
    # Mixup on the augmented recipe, under a cosine schedule with a moving average of the weights
    # (from BreastMNIST's folds only: mixup added 2026-12-01, the schedule and the average
    # 2026-12-02). Mixed pairs of images keep a few hundred of them from being memorised; the
    # average keeps the schedule's late peaks to the end of training. On the same five folds it
    # scored 0.926 and 0.932 mean fold AUC at the best epoch with seeds 0-4 and 10-14, 0.922 and
    # 0.922 over the last ten epochs; mixup with the step decay 0.924 and 0.927, 0.913 and 0.911
    # (BENCHMARKS.md). Mixing and averaging cost a weighted sum per batch and per step: flip_crop's
    # cost. Fourth: its evidence is one subset's folds, so a short budget cuts it before the above.
    Candidate(
        "wd_ls_flip_crop_mixup_cosine_ema",
        (
            *("--arch", "resnet", "--arch_size", "small", *REGULARISED, "--augment", "flip_crop"),
            *("--mixup_alpha", "0.2", "--lr_scheduler_type", "cosine", "--ema_decay", "0.99"),
        ),
        cost=1.05,
    ),
    # The same with rotation and scale (``--augment affine``) in place of flip-and-shift, added
    # 2026-12-08 by a rule written before its runs: the protocol's own mix over the four above and
    # it took it in and scored 0.948 on BreastMNIST's folds against the four's 0.943 (rule: +0.003).
    # Alone it was within a change of CPU of the recipe above (0.929 on an AMD EPYC, 0.916 on an
    # Intel Xeon; BENCHMARKS.md), so it comes after it: a short budget cuts it first.
    Candidate(
        "wd_ls_affine_mixup_cosine_ema",
        (
            *("--arch", "resnet", "--arch_size", "small", *REGULARISED, "--augment", "affine"),
            *("--mixup_alpha", "0.2", "--lr_scheduler_type", "cosine", "--ema_decay", "0.99"),
        ),
        cost=1.05,
    ),
    # ResNet-18 widths: the published rows' network; three times the cost, so last.
    Candidate("wd_ls_resnet18", ("--arch", "resnet", "--arch_size", "base", *REGULARISED), cost=2.9),
)

#: The 3D subsets' space (``--preset medmnist`` is then the published 3D protocol: batch 32, x0.1
#: at half and three quarters). The small 3D ResNet, train_hf.py's 3D default, trained 13.9
#: volumes/s at 28^3 in train_hf.py on one shared core (BENCHMARKS.md), so its cost is about
#: 150 / 14; ACS-small (the published rows' default family) ran at half its rate in bench_3d.py.
#: The ResNet-18 widths (1.15 volumes/s, 18x slower) are left out: 100 epochs of them are out of
#: reach on a CPU, and a budget would cut them first anyway.
SPACE_3D: tuple[Candidate, ...] = (
    Candidate("r3d_wd_ls", ("--arch", "resnet3d", "--arch_size", "small", *REGULARISED), cost=11.0),
    Candidate("r3d_published", ("--arch", "resnet3d", "--arch_size", "small"), cost=11.0),
    Candidate(
        "r3d_wd_ls_flip_crop",
        ("--arch", "resnet3d", "--arch_size", "small", *REGULARISED, "--augment", "flip_crop"),
        cost=11.5,
    ),
    Candidate("acs_wd_ls", ("--arch", "acs", "--arch_size", "small", *REGULARISED), cost=21.0),
)


def for_data(volumetric: bool) -> tuple[Candidate, ...]:
    """The space of a config: 3D networks for volumes, 2D ones for images."""
    return SPACE_3D if volumetric else SPACE


#: Epochs per run, most first; the budget picks the largest that fits. The published 100 first;
#: on BreastMNIST the best epoch of 22 runs was 13-52, so 50 loses little.
EPOCH_TIERS: tuple[int, ...] = (100, 50, 30, 15)
#: The fewest epochs a search runs at. Below it the plan drops the search before the epochs: 15
#: epochs are 75 steps on BreastMNIST, whose best epochs were 13-52, too few to rank recipes by.
SEARCH_MIN_EPOCHS = 30
#: Folds of train+validation pooled, most first (5 as in the BreastMNIST study; 3 when time is short).
FOLD_TIERS: tuple[int, ...] = (5, 3)
#: Seeds of the final model; fold i is trained with seed i, so the final seeds are new. The plan
#: reserves time for the first 4 (2 when short); budget the search left unused grows the ensemble
#: up to all 10 (an average of deep networks gains little past 5-10 members).
FINAL_SEEDS: tuple[int, ...] = tuple(range(100, 110))
SEED_TIERS: tuple[int, ...] = (4, 2)
COMMON_FLAGS: tuple[str, ...] = ("--preset", "medmnist", "--disable_tqdm", "true")


def by_name(space: tuple[Candidate, ...], name: str) -> Candidate:
    for candidate in space:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
