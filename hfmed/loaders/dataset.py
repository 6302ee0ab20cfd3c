"""The IterableDataset: an epoch plan, row groups read in blocks, batches decoded by a thread pool.

Each process (the main one, or each DataLoader worker) walks its own blocks of the epoch plan
(``hfmed.loaders.plan``), reads the row groups a block needs, permutes the block's rows, and hands
whole batches to a small thread pool that decodes them straight into the batch's memory and
applies the batch transform. Several batches are in flight at once, so decoding overlaps reading
and the consumer. In a worker, the output tensors are allocated in shared memory up front, so
handing a batch to the main process copies nothing.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from hfmed.errors import UserError
from hfmed.loaders import cache, decode, plan
from hfmed.loaders.built import SplitSource, TaskInfo, config_files, read_task_info, split_source
from hfmed.loaders.transforms import BatchTransform, as_size

SHUFFLE_BUFFER_BYTES = 256 << 20  # stored bytes one worker's shuffle buffer may hold
EXAMPLE_CHUNK = 64  # rows decoded together when yielding single examples
HUGE_PAGE_MIN_BYTES = 4 << 20  # smaller batches gain nothing from huge pages


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def distributed_rank_world() -> tuple[int, int]:
    """This process's rank and the world size: torch.distributed if initialised, else torchrun's variables."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class _Block:
    """A block's rows, ready for batch jobs: what to decode (or read), and the labels."""

    payload: Any  # list of PNG views | (n, D, H, W) volumes | split row ids for the pixel cache
    labels: np.ndarray
    units: np.ndarray | None = None  # per row: its unit (row group) and row within it, for messages
    unit_rows: np.ndarray | None = None


class _Reader:
    """Row groups of one split, opened lazily in the process that reads them; the last few kept."""

    def __init__(self, source: SplitSource, info: TaskInfo, keep: int = 2) -> None:
        self.source, self.info, self.keep = source, info, keep
        self.files: dict[int, Any] = {}
        self.recent: dict[int, tuple[Any, np.ndarray]] = {}

    def unit(self, index: int, images: bool = True) -> tuple[Any, np.ndarray]:
        if index in self.recent:
            return self.recent[index]
        u = self.source.units[index]
        info = self.info
        columns = [info.image_column, info.label_column] if images else [info.label_column]
        try:
            pf = self.files.get(u.file) or self.files.setdefault(u.file, self.source.open(u.file))
            table = pf.read_row_group(u.group, columns=columns)
            labels = decode.label_array(table.column(info.label_column), info.num_labels, info.multi_label)
            pixels: Any = None
            if images and info.volumetric:
                pixels = decode.volume_array(table.column(info.image_column), info.image_shape)
            elif images:
                pixels = decode.blob_views(decode.binary_column(table.column(info.image_column)))
        except FileNotFoundError:
            raise UserError(
                f"{self.source.where(index)}: the file is gone (removed after the loader listed the split); "
                "rebuild this config with `hfmed build --overwrite` and start again"
            ) from None
        except (OSError, ValueError, pa.ArrowException) as e:  # truncated, rewritten or damaged since listed
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(
                f"{self.source.where(index)}: cannot be read ({reason}); rebuild this config "
                "with `hfmed build --overwrite`"
            ) from None
        if len(self.recent) >= self.keep:
            self.recent.pop(next(iter(self.recent)))
        self.recent[index] = (pixels, labels)
        return pixels, labels

    def close(self) -> None:
        """Close the Parquet files this pass opened (their descriptors, or Hub connections)."""
        for pf in self.files.values():
            try:
                pf.close(force=True)  # a Hub file object too (see built.Location.opened)
            except Exception:  # noqa: BLE001 - closing is best effort; the data was read already
                pass
        self.files.clear()
        self.recent.clear()


class StreamingImageDataset(IterableDataset):
    """Batches (or single examples) of one split of an hfmed build, local or on the Hub.

    Yields ``{"pixel_values": tensor (B, C, H, W) or (B, 1, D, H, W), "labels": tensor}``: labels
    are class ids (int64, ``(B,)``) for single-label tasks and multi-hot float32 ``(B, K)`` for
    multi-label ones. With ``batch_size=None`` it yields single examples instead (``(C, H, W)``
    and a scalar or ``(K,)``), for consumers that batch themselves, such as ``transformers.Trainer``
    with its default DataLoader.

    Every row is yielded exactly once per epoch across ranks and DataLoader workers: ranks come
    from ``rank``/``world_size`` if given, else from ``torch.distributed`` once initialised, else
    from torchrun's ``RANK``/``WORLD_SIZE`` (so under ``accelerate``'s batch dispatching, where
    rank 0 reads for everyone, pass ``world_size=1``). Give every rank the same ``seed``.
    ``set_epoch`` changes the shuffle; it reaches persistent workers too.

    ``streaming=False`` decodes the split once into a local cache of raw pixels (see
    ``hfmed.loaders.cache``) and reads from it every epoch; Hub files are downloaded first.
    Volumes are stored raw already and are always read from the shards.

    ``defer_transform=True`` yields uint8 batches at the stored size with the stored channels and
    leaves ``self.transform`` to the caller, to run on an accelerator (``hfmed.loaders.Loader``
    does this when given a ``device``); RGB batches are then channels-last in memory.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        config: str | None = None,
        split: str = "train",
        *,
        batch_size: int | None = 256,
        task: str | None = None,
        image_size: int | tuple[int, ...] | None = None,
        rgb: bool = False,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        dtype: torch.dtype = torch.float32,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        defer_transform: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 4096,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        streaming: bool = True,
        decode_threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if batch_size is not None and batch_size <= 0:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        if shuffle_buffer <= 0:
            raise UserError(f"shuffle_buffer must be positive, got {shuffle_buffer}")
        if seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed}")
        if decode_threads is not None and decode_threads <= 0:
            raise UserError(f"decode_threads must be positive, got {decode_threads}")
        files = config_files(source, config, revision=revision, token=token, streaming=streaming)
        self.source = split_source(files, split)
        self.info = read_task_info(self.source, task, files.split_sizes)
        spatial = len(self.info.image_shape)
        size = as_size(image_size, spatial)
        size = None if size == tuple(self.info.image_shape) else size  # nothing to resize
        self.transform = BatchTransform(size, rgb, _floats(mean), _floats(std), dtype, augment)
        self.transform.check(self.info.channels, spatial)
        self.stage = self.transform  # what _make_batch applies; see finish_elsewhere
        self.batch_size = batch_size
        self.defer_transform = defer_transform
        self.shuffle, self.seed, self.shuffle_buffer, self.drop_last = shuffle, seed, shuffle_buffer, drop_last
        if (
            world_size is not None
            and world_size <= 0
            or rank is not None
            and world_size is not None
            and not 0 <= rank < world_size
        ):
            raise UserError(f"rank {rank} is not within world_size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.decode_threads = decode_threads
        self.pixel_cache: cache.PixelCache | None = None
        if not streaming and not self.info.volumetric:
            threads = decode_threads or available_cpus()
            self.pixel_cache = cache.prepare(
                self.source, self.info, cache_dir=cache_dir, threads=threads, progress=progress
            )
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._unit_start = np.concatenate([[0], np.cumsum(self.source.unit_rows)]).astype(np.int64)
        self._cache_labels: np.ndarray | None = None
        self._scratch = _Scratch()
        self.recycle_slots = 0  # batches in flight per worker, set by a Loader that releases them; see SlotPool
        self._slots: tuple[int, SlotPool] | None = None  # (pid, pool): see _slot_pool
        self._memory: tuple[int, BatchMemory] | None = None
        self.report_errors = False  # set by a Loader: a worker hands a UserError over as a batch (ERROR_KEY)

    # --- what it is -------------------------------------------------------------------------
    @property
    def label_names(self) -> tuple[str, ...]:
        return self.info.label_names

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def num_rows(self) -> int:
        """Rows of the whole split (all ranks)."""
        return self.source.num_rows

    def rank_world(self) -> tuple[int, int]:
        """(rank, world size): the arguments where given, else torch.distributed or torchrun's variables."""
        rank, world = distributed_rank_world()
        world = self.world_size if self.world_size is not None else world
        rank = self.rank if self.rank is not None else (0 if world == 1 else rank)
        if not 0 <= rank < world:
            raise UserError(f"RANK={rank} is not within WORLD_SIZE={world}")
        return rank, world

    @property
    def _drop_last(self) -> bool:
        return self.drop_last and self.batch_size is not None  # single examples have no short batch

    def rows_per_rank(self) -> int:
        rank, world = self.rank_world()
        return plan.rank_rows(self.num_rows, rank, world, batch=self.batch_size or 1, drop_last=self._drop_last)

    def __len__(self) -> int:
        """Items this rank yields per epoch: batches, or examples with ``batch_size=None``."""
        rows = self.rows_per_rank()
        if self.batch_size is None:
            return rows
        return rows // self.batch_size if self._drop_last else -(-rows // self.batch_size)

    def finish_elsewhere(self) -> BatchTransform | None:
        """Yield uint8 batches (resized and augmented) and return the rest of the transform
        (RGB, float conversion, statistics) for the consuming process to apply; see
        ``BatchTransform.split``. Call before iterating."""
        if self.defer_transform:
            return None
        self.stage, finish = self.transform.split()
        return finish

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    # --- planning ---------------------------------------------------------------------------
    def _block_target(self) -> int:
        if not self.shuffle:
            rows = sorted(self.source.unit_rows)
            return rows[len(rows) // 2]  # about a row group per block: each is read once
        if self.pixel_cache is not None:
            return self.shuffle_buffer  # a block holds row ids only
        return max(1, min(self.shuffle_buffer, SHUFFLE_BUFFER_BYTES // self.source.row_nbytes))

    def blocks(self, worker: int = 0, workers: int = 1, epoch: int | None = None) -> list[plan.Block]:
        """The blocks ``worker`` of ``workers`` reads this epoch, on this rank."""
        rank, world = self.rank_world()
        every = plan.epoch_blocks(
            self.source.unit_rows,
            rank=rank,
            world=world,
            workers=workers,
            batch=self.batch_size or EXAMPLE_CHUNK,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            target_rows=self._block_target(),
            drop_last=self._drop_last,
        )
        return every[worker::workers]

    # --- reading ------------------------------------------------------------------------------
    def _load(self, block: plan.Block, reader: _Reader) -> _Block:
        if self.pixel_cache is not None:
            if self._cache_labels is None:
                self._cache_labels = self.pixel_cache.labels(self.info.label_column)
            rows = np.concatenate([self._unit_start[p.unit] + np.arange(p.start, p.stop) for p in block.pieces])
            return _Block(rows, self._cache_labels[rows])
        parts = [(reader.unit(p.unit), p) for p in block.pieces]
        labels = np.concatenate([lab[p.start : p.stop] for (_, lab), p in parts])
        if self.info.volumetric:
            return _Block(np.concatenate([pix[p.start : p.stop] for (pix, _), p in parts]), labels)
        views: list = []
        for (pix, _), p in parts:
            views.extend(pix[p.start : p.stop])
        units = np.concatenate([np.full(p.num_rows, p.unit, dtype=np.int64) for _, p in parts])
        rows = np.concatenate([np.arange(p.start, p.stop, dtype=np.int64) for _, p in parts])
        return _Block(views, labels, units, rows)

    def _pixels(self, block: _Block, idx: np.ndarray, out: np.ndarray) -> None:
        if self.pixel_cache is not None:
            self.pixel_cache.read(block.payload[idx], out)
        elif self.info.volumetric:
            np.take(block.payload, idx, axis=0, out=out)
        else:
            payload = block.payload
            try:
                decode.decode_images([payload[i] for i in idx.tolist()], out)
            except decode.BadImage as e:
                row = int(idx[e.index])
                where = self.source.where(int(block.units[row]), int(block.unit_rows[row]))
                raise UserError(
                    f"{where}: the image cannot be decoded ({e.reason}); rebuild this config with "
                    "`hfmed build --overwrite`"
                ) from None

    def _make_batch(
        self,
        block: _Block,
        idx: np.ndarray,
        shared: bool,
        pool: SlotPool | None = None,
        memory: BatchMemory | None = None,
    ) -> dict[str, Any]:
        info, n = self.info, len(idx)
        row = cache.row_shape(info)
        direct = self.defer_transform or (self.stage.identity and info.channels == 1)
        alloc = pool.take if pool is not None else _shared_empty if shared else memory or _private_empty
        # RGB PNGs decode fastest into RGBX (see decode.decode_images); the stage below copies
        # the batch out of the scratch buffer anyway, so it reads the three channels from there.
        rgbx = info.channels == 3 and not direct and self.pixel_cache is None and not info.volumetric
        if direct:  # decode straight into the memory handed over (shared with the main process)
            pixels = alloc((n, *row), torch.uint8)
            out = pixels.numpy()
        else:
            out = self._scratch.get((n, *row[:-1], 4) if rgbx else (n, *row))
            pixels = torch.from_numpy(out)
        self._pixels(block, idx, out)
        if rgbx:
            pixels = pixels[..., :3]
            if self.stage.size is not None or self.stage.augment is not None:
                # packed channels-last, as before: the uint8 resize kernel wants it, and an augment
                # callable receives the same layout whichever way the batch was decoded
                pixels = pixels.contiguous()
        x = pixels.permute(0, 3, 1, 2) if info.channels == 3 else pixels.unsqueeze(1)
        if not direct:
            x = self.stage(x, alloc, keep_input=True)  # `out` is reused
        labels = torch.from_numpy(block.labels[idx])
        if info.multi_label:
            labels = labels.float()
        batch: dict[str, Any] = {"pixel_values": x, "labels": labels}
        if pool is not None:
            batch[SLOT_KEY] = SlotPool.is_slot(x)
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if get_worker_info() is None or not self.report_errors:
            yield from self._batches()
            return
        try:
            yield from self._batches()
        except UserError as e:
            # Raised here, the DataLoader would re-raise it in the consumer wrapped in a worker
            # traceback; as a batch, ``Loader`` raises it there as the one line it is.
            yield {ERROR_KEY: str(e)}

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        k, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        epoch = self.epoch
        rank, _ = self.rank_world()
        blocks = self.blocks(k, workers, epoch)
        threads = self.decode_threads or max(1, available_cpus() // workers)
        batch = self.batch_size or EXAMPLE_CHUNK
        reader = _Reader(self.source, self.info)
        slots = (
            self._slot_pool(threads)
            if self.recycle_slots and worker is not None and self.batch_size is not None
            else None
        )
        # In the consuming process itself, batches go straight to the caller: recycle their memory.
        memory = self._batch_memory(threads) if worker is None and self.batch_size is not None else None
        pool = ThreadPoolExecutor(threads, thread_name_prefix="hfmed-decode")
        pending: deque[Future] = deque()
        try:
            for b in blocks:
                loaded = self._load(b, reader)
                order = plan.row_permutation(
                    b.num_rows, shuffle=self.shuffle, seed=self.seed, epoch=epoch, rank=rank, block=b.index
                )
                for start in range(0, b.num_rows, batch):
                    pending.append(
                        pool.submit(
                            self._make_batch, loaded, order[start : start + batch], worker is not None, slots, memory
                        )
                    )
                    while len(pending) > threads:
                        yield from self._emit(pending.popleft().result())
            while pending:
                yield from self._emit(pending.popleft().result())
        finally:
            if not sys.is_finalizing():  # at exit the executor's own hook has already stopped its threads
                for f in pending:
                    f.cancel()
                pool.shutdown(wait=False, cancel_futures=True)
                reader.close()

    def _slot_pool(self, threads: int) -> SlotPool:
        """This worker's pool, kept from pass to pass (persistent workers): a pool made per pass
        would allocate fresh shared memory every epoch, and on a split of a few thousand rows
        that is every batch. Reuse across passes is safe because a slot is refilled only once the
        consumer has released it; the batch of a slot that the DataLoader discards when a pass is
        left early is never released, so that slot simply stays out of use."""
        if self._slots is None or self._slots[0] != os.getpid():
            self._slots = (os.getpid(), SlotPool(threads + self.recycle_slots))
        return self._slots[1]

    def _batch_memory(self, threads: int) -> BatchMemory:
        """The consuming process's batch memory, kept from pass to pass for the same reason."""
        if self._memory is None or self._memory[0] != os.getpid():
            self._memory = (os.getpid(), BatchMemory(threads + 3))
        return self._memory[1]

    def _emit(self, batch: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        if self.batch_size is not None:
            yield batch
            return
        pixels, labels = batch["pixel_values"], batch["labels"]
        for i in range(len(labels)):
            yield {"pixel_values": pixels[i], "labels": labels[i]}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache_labels"] = None
        state["_slots"] = state["_memory"] = None
        state["_scratch"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._scratch = _Scratch()


SLOT_KEY = "_hfmed_slot"  # in a worker's batch: True when its pixels live in a SlotPool slot
ERROR_KEY = "_hfmed_error"  # a worker's last "batch" when it met a UserError: the message


class SlotPool:
    """Shared-memory batch buffers that a DataLoader worker reuses once the consumer is done.

    Fresh shared memory is expensive: torch allocates and zeroes every page of it up front, about
    40 us per 224 px image, a quarter of decoding one. When the consumer finishes each batch
    itself (``Loader`` with workers converts the uint8 batch to float into its own memory), the
    uint8 batch is dead as soon as that copy is made, so its memory can be decoded into again.
    Each slot is one shared buffer with a flag byte after the pixels: the worker sets it when it
    fills the slot, the consumer clears it (``release``) after its copy. A worker that finds no
    free slot allocates fresh memory, as without the pool, so it never waits for the consumer.
    """

    def __init__(self, max_slots: int) -> None:
        self.max_slots = max_slots
        self.slots: list[torch.Tensor] = []  # flat uint8 buffers, flag byte last
        self.lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if dtype != torch.uint8:
            return _shared_empty(shape, dtype)
        n = math.prod(shape)
        with self.lock:
            slot = next((s for s in self.slots if s.numel() - 1 >= n and s[-1].item() == 0), None)
            if slot is None and len(self.slots) < self.max_slots:
                slot = _shared_empty((n + 1,), torch.uint8)
                self.slots.append(slot)
            if slot is None:
                return _shared_empty(shape, dtype)
            slot[-1] = 1
        return slot[:n].view(shape)

    @staticmethod
    def is_slot(pixels: torch.Tensor) -> bool:
        storage = pixels.untyped_storage()
        return pixels.dtype == torch.uint8 and storage.nbytes() > pixels.numel() and storage.is_shared()

    @staticmethod
    def release(pixels: torch.Tensor) -> None:
        """Hand the slot ``pixels`` lives in back to its worker (the consumer is done reading it)."""
        storage = pixels.untyped_storage()
        torch.empty(0, dtype=torch.uint8).set_(storage, storage.nbytes() - 1, (1,)).zero_()


def _shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor born in shared memory (``share_memory_`` would allocate twice and copy)."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return torch.empty(0, dtype=dtype).set_(torch.UntypedStorage._new_shared(nbytes), 0, shape)


def _huge_area(nbytes: int) -> mmap.mmap:
    area = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        area.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel without transparent huge pages: ordinary pages, same memory
        pass
    return area


def _private_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A fresh tensor for a batch the caller keeps, on transparent huge pages where Linux offers them.

    First touching fresh memory costs a page fault per 4 KiB: a float32 224 px batch is 12,500 of
    them, measured here at more than the decoding of the batch itself. Asking for huge pages
    (``MADV_HUGEPAGE``) makes that 512 times fewer; the memory is returned when the tensor is dropped.
    """
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if nbytes < HUGE_PAGE_MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(_huge_area(nbytes), dtype=dtype, count=math.prod(shape)).view(shape)


class BatchMemory:
    """Memory for the batches one iteration hands out, refilled once nothing refers to it any more.

    Even on huge pages, fresh memory is zeroed by the kernel before it is written: at 224 px that
    is about 40% of converting a batch to float. A training loop drops each batch after its step,
    so the memory of a batch two or three steps old is usually free again. Each hand-out goes
    through its own ``memoryview`` of a kept area: ``torch.frombuffer`` holds that view for as long
    as the tensor's storage lives (every view, slice and numpy array of the tensor shares that
    storage), and a ``weakref.finalize`` on it puts the area back on the free list when the storage
    is gone. That is an explicit release, tied to the object's lifetime rather than to a reference
    count's value; until it comes, a fresh area is used. At most ``keep`` areas are kept.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.areas: list[mmap.mmap] = []
        self.free: list[int] = []  # indices into ``areas`` that no live tensor uses
        # Reentrant: a finalizer can run inside the locked section of the same thread (a cyclic
        # garbage collection triggered by an allocation there).
        self.lock = threading.RLock()

    def _release(self, i: int) -> None:
        with self.lock:
            self.free.append(i)

    def _hand_out(self, i: int, dtype: torch.dtype, count: int, shape: tuple[int, ...]) -> torch.Tensor:
        view = memoryview(self.areas[i])
        weakref.finalize(view, self._release, i)
        return torch.frombuffer(view, dtype=dtype, count=count).view(shape)

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        count = math.prod(shape)
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        if nbytes < HUGE_PAGE_MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
            return torch.empty(shape, dtype=dtype)
        with self.lock:
            i = next((i for i in self.free if len(self.areas[i]) >= nbytes), None)
            if i is None and self.free:  # only smaller free areas (a short last batch's): replace one
                i = self.free[0]
                self.areas[i] = _huge_area(nbytes)
            if i is not None:
                self.free.remove(i)
                return self._hand_out(i, dtype, count, shape)
            if len(self.areas) < self.keep:
                self.areas.append(_huge_area(nbytes))
                return self._hand_out(len(self.areas) - 1, dtype, count, shape)
        return torch.frombuffer(_huge_area(nbytes), dtype=dtype, count=count).view(shape)


class _Scratch(threading.local):
    """A decode buffer per thread, reused batch after batch when the batch is transformed into
    other memory anyway: fresh pages cost a fault each, which adds up at 224 px."""

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        buf = getattr(self, "buf", None)
        n = math.prod(shape)
        if buf is None or buf.size < n:
            buf = self.buf = np.empty(n, dtype=np.uint8)
        return buf[:n].reshape(shape)


def _floats(values: float | Sequence[float] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    if isinstance(values, (int, float)):
        return (float(values),)
    return tuple(float(v) for v in values)
