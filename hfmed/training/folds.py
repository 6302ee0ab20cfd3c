"""Cross-validation folds: train and validation pooled, one fold held out, batches as the loaders give them.

A fold is an arbitrary subset of the pooled rows, which the loaders' plan (row groups of one
split) cannot express. The pooled rows are read once through ``hfmed.loaders.dataloader`` as uint8
(train then validation, in source order, every rank all of them: the folds are a function of the
labels), and kept in memory at their stored size: 624 BreastMNIST images are 0.5 MB, and
cross-validation is for choosing a recipe on small subsets. From there a fold yields whole batches
exactly as a loader does: each rank its own share of the epoch's rows (``loaders.plan``), the
same ``BatchTransform`` (resize, augment, RGB, normalise) on the CPU or on the accelerator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from hfmed import loaders
from hfmed.errors import UserError
from hfmed.loaders import TaskInfo, plan
from hfmed.loaders.dataset import distributed_rank_world
from hfmed.loaders.transforms import BatchTransform

#: Seed of the fold assignment. Fixed, so that every recipe and every training seed is validated
#: on the same folds and their scores can be compared fold by fold.
CV_SEED = 0
POOLED = ("train", "validation")


def cv_assignment(labels: np.ndarray, folds: int, seed: int = CV_SEED) -> np.ndarray:
    """The fold (0 to folds-1) of each row, stratified: each label value is dealt evenly over the folds.

    ``labels`` is ``(N,)`` class ids or ``(N, K)`` multi-hot rows (stratified by whole label
    pattern). Rows of one value are shuffled, then dealt round-robin, the count carrying over from
    one value to the next, so fold sizes differ by one row at most.
    """
    rng = np.random.default_rng(seed)
    _, value_of = np.unique(labels.reshape(len(labels), -1), axis=0, return_inverse=True)
    value_of = value_of.reshape(-1)
    fold_of = np.empty(len(labels), dtype=np.int64)
    dealt = 0
    for value in range(int(value_of.max()) + 1 if len(labels) else 0):
        rows = rng.permutation(np.flatnonzero(value_of == value))
        fold_of[rows] = (dealt + np.arange(len(rows))) % folds
        dealt += len(rows)
    return fold_of


# Grouped folds (``--cv_groups``). Images of one patient are alike; a patient in both the training
# and the held-out part of a fold makes the fold's score too good, and too good by more for
# recipes that memorise. So a group (``patient_id`` in MedIMeta) is never split, and within that
# constraint every fold gets close to the same share of each label.


def strata(labels: np.ndarray) -> np.ndarray:
    """One stratum per distinct label (a row of a multi-label matrix counts as one label)."""
    labels = np.asarray(labels)
    rows = labels.reshape(len(labels), -1)
    _, inverse = np.unique(rows, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def grouped_assignment(
    labels: np.ndarray, folds: int, groups: np.ndarray | None = None, seed: int = CV_SEED
) -> np.ndarray:
    """The fold (0..folds-1) of every sample, no group split between two folds.

    Groups are placed largest first (ties in a seeded random order), each into the fold where it
    leaves the label counts closest to an equal share, with the fold's size as the tie-break.
    Without groups each sample is its own group, which gives a plain stratified split.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    stratum = strata(labels)
    n = len(stratum)
    group_ids = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    n_groups = int(group_ids.max()) + 1 if n else 0
    if n_groups < folds:
        raise ValueError(f"{n_groups} groups cannot fill {folds} folds")
    classes = int(stratum.max()) + 1
    counts = np.zeros((n_groups, classes))
    np.add.at(counts, (group_ids, stratum), 1)
    share = counts.sum(axis=0) / folds  # what each fold should hold of each label

    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    fold_counts = np.zeros((folds, classes))
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    for g in order:
        after = fold_counts + counts[g]
        excess = np.clip(after - share, 0, None).sum(axis=1)  # how far past its share each fold would go
        sizes = fold_counts.sum(axis=1)
        best = np.lexsort((sizes, excess))[0]
        fold_of_group[g] = best
        fold_counts[best] += counts[g]
    return fold_of_group[group_ids]


def read_groups(location: str, config: str, column: str) -> np.ndarray:
    """``column`` of every train then validation row of a local build, in the order ``read_pooled`` reads them."""
    from hfmed.loaders.built import config_files, split_source

    files = config_files(location, config)
    values = []
    for split in POOLED:
        source = split_source(files, split)
        if column not in source.schema.names:
            names = ", ".join(n for n in source.schema.names if n not in ("image", "volume"))
            raise UserError(
                f"{config} in {location} has no {column!r} column to group folds by (--cv_groups); its columns: {names}"
            )
        for unit in source.units:
            with source.location.opened(source.files[unit.file]) as parquet:
                values.append(
                    parquet.read_row_group(unit.group, columns=[column]).column(0).to_numpy(zero_copy_only=False)
                )
    return np.concatenate(values)


def read_pooled(location: str, config: str, info: TaskInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Every train then validation row of a local build: uint8 pixels (N, C, *S) and labels, in source order."""
    pixels, labels = [], []
    for split in POOLED:
        loader = loaders.dataloader(
            location,
            config,
            split=split,
            batch_size=512,
            dtype=torch.uint8,
            task=info.label_column,
            streaming=False,
            rank=0,
            world_size=1,
            progress=False,
        )
        for batch in loader:
            pixels.append(batch["pixel_values"].clone())
            labels.append(batch["labels"].clone())
    return torch.cat(pixels), torch.cat(labels)


@dataclass
class Fold:
    """The pooled rows, and which of them fold ``fold`` of ``folds`` holds out."""

    config: str
    pixels: torch.Tensor
    labels: torch.Tensor
    held_out: np.ndarray  # bool per pooled row
    folds: int
    fold: int

    @classmethod
    def read(cls, location: str, config: str, info: TaskInfo, folds: int, fold: int, groups: str | None = None) -> Fold:
        """``groups``: a column whose value (a patient) keeps its rows in one fold; None: rows are dealt alone."""
        pixels, labels = read_pooled(location, config, info)
        if len(labels) < 2 * folds:
            raise UserError(
                f"{config} in {location} has {len(labels)} train and validation rows, too few "
                f"for --cv_folds {folds}; use fewer folds"
            )
        if groups is None:
            assignment = cv_assignment(labels.numpy(), folds)
        else:
            group_of = read_groups(location, config, groups)
            if len(group_of) != len(labels) or any(v is None for v in group_of):
                raise UserError(
                    f"{config} in {location}: the {groups!r} column is empty for some rows; group "
                    "folds by a column every row has"
                )
            if len(np.unique(group_of)) < folds:
                raise UserError(
                    f"{config} in {location} has {len(np.unique(group_of))} distinct {groups} "
                    f"values, too few for --cv_folds {folds}; use fewer folds"
                )
            assignment = grouped_assignment(labels.numpy(), folds, group_of)
        return cls(config, pixels, labels, assignment == fold, folds, fold)

    def rows(self, split: str) -> np.ndarray:
        """Pooled row ids of the fold's ``train`` (all but the held-out fold) or ``validation`` (the held-out fold)."""
        return np.flatnonzero(self.held_out if split == "validation" else ~self.held_out)

    @property
    def sizes(self) -> dict[str, int]:
        return {split: len(self.rows(split)) for split in POOLED}

    def loader(
        self,
        split: str,
        *,
        batch_size: int,
        transform: BatchTransform,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        device: torch.device | None = None,
    ) -> FoldLoader:
        rows = self.rows(split)
        batches = RowBatches(
            self.pixels[rows],
            self.labels[rows],
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            transform=None if device is not None else transform,
        )
        return FoldLoader(batches, transform if device is not None else None, device)


class RowBatches(IterableDataset):
    """Batches of rows held in memory, each rank its share of the epoch's order (``loaders.plan``)."""

    def __init__(
        self,
        pixels: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        transform: BatchTransform | None,
    ) -> None:
        self.pixels, self.labels = pixels, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.transform = transform
        self.epoch = 0

    def _rank_rows(self) -> np.ndarray:
        rank, world = distributed_rank_world()
        n = len(self.labels)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        a, _ = plan.rank_range(n, rank, world, drop_last=self.drop_last)
        count = plan.rank_rows(n, rank, world, batch=self.batch_size, drop_last=self.drop_last)
        return order[a : a + count]

    def rows_per_rank(self) -> int:
        """Rows this rank reads per epoch, what ``MedTrainer.num_examples`` reports: without it a fold
        run logged its batches as its examples and their rate as train_samples_per_second."""
        return len(self._rank_rows())

    def __len__(self) -> int:
        return -(-self.rows_per_rank() // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows = self._rank_rows()
        for start in range(0, len(rows), self.batch_size):
            idx = torch.from_numpy(rows[start : start + self.batch_size])
            pixels = self.pixels[idx]
            yield {
                "pixel_values": self.transform(pixels) if self.transform is not None else pixels,
                "labels": self.labels[idx],
            }


class FoldLoader(DataLoader):
    """A DataLoader of a fold's ready batches with ``set_epoch``, as ``hfmed.loaders.Loader`` has;
    given a ``device``, uint8 batches move there and are transformed there."""

    def __init__(self, batches: RowBatches, transform: BatchTransform | None, device: torch.device | None) -> None:
        super().__init__(batches, batch_size=None)
        self.device, self.transform = device, transform
        self._next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.dataset.epoch = self._next_epoch
        self._next_epoch += 1
        for batch in super().__iter__():
            if self.device is None:
                yield batch
                continue
            pixels = batch["pixel_values"].to(self.device, non_blocking=True)
            yield {"pixel_values": self.transform(pixels), "labels": batch["labels"].to(self.device, non_blocking=True)}
