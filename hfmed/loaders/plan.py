"""Which rows a rank, a DataLoader worker and a batch get in one epoch.

Everything here is a pure function of the row-group sizes, the seed and the epoch, so every rank
and every worker computes the same plan on its own and no process ever waits for another:

1. The split's row groups (the units a Parquet reader fetches at once) are put in epoch order:
   source order, or a permutation drawn from ``(seed, epoch)`` when shuffling.
2. The rows of that sequence are cut into ``world`` contiguous ranges, one per rank, whose sizes
   differ by at most one row (every row belongs to exactly one rank). With ``drop_last`` every rank
   takes exactly ``total // world`` rows, then whole batches only, so all ranks run the same number
   of steps (what DDP needs to avoid waiting forever in an all-reduce).
3. A rank's rows are cut into blocks of whole batches; blocks go to DataLoader workers round-robin.
   A block is the shuffle buffer: its rows are permuted with a generator seeded by
   ``(seed, epoch, rank, block)``. Blocks are sized so that every worker gets some (the block count
   is a multiple of the worker count) and none exceeds the buffer; a row group larger than a block
   is simply read by the blocks that need it, so a split with fewer files or row groups than
   ``ranks * workers`` still keeps every worker busy.

This is the contract of ``datasets.distributed.split_dataset_by_node`` (each rank reads its own
share, workers split it further) at row-group granularity, with exact shares and no stalls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` of unit (row group) ``unit``."""

    unit: int
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Block:
    """A run of consecutive rows of one rank's epoch sequence, handled by one worker."""

    index: int
    pieces: tuple[Piece, ...]

    @property
    def num_rows(self) -> int:
        return sum(p.num_rows for p in self.pieces)


def unit_order(num_units: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    if not shuffle:
        return np.arange(num_units)
    return np.random.default_rng([seed, epoch]).permutation(num_units)


def rank_range(total: int, rank: int, world: int, *, drop_last: bool) -> tuple[int, int]:
    """Rows ``[a, b)`` of the epoch sequence that belong to ``rank``."""
    if drop_last:
        share = total // world
        return rank * share, (rank + 1) * share
    return rank * total // world, (rank + 1) * total // world


def rank_rows(total: int, rank: int, world: int, *, batch: int, drop_last: bool) -> int:
    """How many rows ``rank`` yields per epoch (whole batches only with ``drop_last``)."""
    a, b = rank_range(total, rank, world, drop_last=drop_last)
    n = b - a
    return n - n % batch if drop_last else n


def _pieces(unit_rows: Sequence[int], order: np.ndarray, a: int, b: int) -> list[Piece]:
    out = []
    pos = 0
    for u in order:
        n = int(unit_rows[u])
        lo, hi = max(a, pos), min(b, pos + n)
        if lo < hi:
            out.append(Piece(int(u), lo - pos, hi - pos))
        pos += n
        if pos >= b:
            break
    return out


def block_sizes(num_rows: int, *, batch: int, workers: int, target_rows: int) -> list[int]:
    """Rows per block: whole batches, a multiple of ``workers`` blocks, each at most ~``target_rows``.

    Batches are spread evenly over the blocks so that workers finish together; only the very last
    batch of the rank may be short.
    """
    if num_rows <= 0:
        return []
    workers = max(1, workers)
    batches = math.ceil(num_rows / batch)
    count = max(workers, math.ceil(num_rows / max(batch, target_rows)))
    count = min(batches, math.ceil(count / workers) * workers)
    per, extra = divmod(batches, count)
    sizes = [(per + (i < extra)) * batch for i in range(count)]
    sizes[-1] -= batches * batch - num_rows
    return sizes


def epoch_blocks(
    unit_rows: Sequence[int],
    *,
    rank: int,
    world: int,
    workers: int,
    batch: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    target_rows: int,
    drop_last: bool,
) -> list[Block]:
    """The blocks of ``rank`` for this epoch; worker ``k`` of ``workers`` takes ``blocks[k::workers]``."""
    order = unit_order(len(unit_rows), shuffle=shuffle, seed=seed, epoch=epoch)
    a, _ = rank_range(int(sum(unit_rows)), rank, world, drop_last=drop_last)
    n = rank_rows(int(sum(unit_rows)), rank, world, batch=batch, drop_last=drop_last)
    pieces = _pieces(unit_rows, order, a, a + n)
    blocks = []
    i = 0
    offset = 0  # rows of pieces[i] already given to earlier blocks
    for index, size in enumerate(block_sizes(n, batch=batch, workers=workers, target_rows=target_rows)):
        taken: list[Piece] = []
        need = size
        while need:
            p = pieces[i]
            take = min(need, p.num_rows - offset)
            taken.append(Piece(p.unit, p.start + offset, p.start + offset + take))
            need -= take
            offset += take
            if offset == p.num_rows:
                i, offset = i + 1, 0
        blocks.append(Block(index, tuple(taken)))
    return blocks


def row_permutation(num_rows: int, *, shuffle: bool, seed: int, epoch: int, rank: int, block: int) -> np.ndarray:
    """Order of a block's rows: the bounded shuffle buffer."""
    if not shuffle:
        return np.arange(num_rows)
    return np.random.default_rng([seed, epoch, rank, block]).permutation(num_rows)
