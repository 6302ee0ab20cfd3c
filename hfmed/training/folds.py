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
    def read(cls, location: str, config: str, info: TaskInfo, folds: int, fold: int) -> Fold:
        pixels, labels = read_pooled(location, config, info)
        if len(labels) < 2 * folds:
            raise UserError(
                f"{config} in {location} has {len(labels)} train and validation rows, too few for --cv_folds {folds}; use fewer folds"
            )
        held_out = cv_assignment(labels.numpy(), folds) == fold
        return cls(config, pixels, labels, held_out, folds, fold)

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
    ):
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

    def __len__(self) -> int:
        return -(-len(self._rank_rows()) // self.batch_size)

    def __iter__(self):
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

    def __init__(self, batches: RowBatches, transform: BatchTransform | None, device: torch.device | None):
        super().__init__(batches, batch_size=None)
        self.device, self.transform = device, transform
        self._next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def __iter__(self):
        self.dataset.epoch = self._next_epoch
        self._next_epoch += 1
        for batch in super().__iter__():
            if self.device is None:
                yield batch
                continue
            pixels = batch["pixel_values"].to(self.device, non_blocking=True)
            yield {"pixel_values": self.transform(pixels), "labels": batch["labels"].to(self.device, non_blocking=True)}
