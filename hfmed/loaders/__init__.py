"""Training batches straight from an hfmed build, local or on the Hub, faster than decoding per row.

    from hfmed import loaders
    train = loaders.dataloader("medmnist", "pneumoniamnist", split="train", batch_size=256,
                               image_size=224, num_workers=8, shuffle=True, streaming=True)
    for batch in train:   # {"pixel_values": float32 (B, C, H, W), "labels": int64 (B,)}
        ...
    train.label_names, train.task, train.info   # for the model head and the report

The first argument is a build folder (``hfmed build`` output) or a Hub dataset id
(``my-org/medmnist``); a folder that exists wins. Shards are read directly with pyarrow, one row
group at a time, and decoded a whole batch at a time in a thread pool (see ``decode``), in every
DataLoader worker. The public names:

- ``dataloader(...)`` -> ``Loader``: a ``torch.utils.data.DataLoader`` of ready batches, with
  ``set_epoch``, ``label_names``, ``task``, ``info``. Given ``device=`` it moves uint8 batches
  (pinned, non-blocking) and resizes/normalises them there. With workers, batches cross from
  them as uint8 and become float in the consuming process (a quarter of the shared memory).
- ``StreamingImageDataset``: the ``torch.utils.data.IterableDataset`` underneath, for a
  DataLoader of your own or ``transformers.Trainer`` (``batch_size=None`` yields single examples).
- ``task_info(source, config, task=None)`` -> ``TaskInfo``: label column, task type
  (binary, multi-class, ordinal, multi-label), label names, number of labels, channels, image size.
- ``BatchTransform``: the resize/augment/RGB/normalise step, to run wherever you like.

Distributed runs (``torchrun``, ``accelerate launch``): every rank reads its own share of the
rows and workers split it further (``plan``); pass ``drop_last=True`` for training so that every
rank runs the same number of steps. 3D configs are supported: ``pixel_values`` is
``(B, 1, D, H, W)`` and ``image_size`` resizes trilinearly.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from hfmed.errors import UserError
from hfmed.loaders.built import TaskInfo, config_files, read_task_info, split_source
from hfmed.loaders.dataset import ERROR_KEY, SLOT_KEY, BatchMemory, SlotPool, StreamingImageDataset
from hfmed.loaders.transforms import BatchTransform

__all__ = ["BatchTransform", "Loader", "StreamingImageDataset", "TaskInfo", "dataloader", "task_info"]


def task_info(
    source: str | os.PathLike,
    config: str | None = None,
    task: str | None = None,
    *,
    split: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
) -> TaskInfo:
    """What a config's examples are: read from the card and one split's schema (and one image).

    ``task`` names the label column where a config has several (MedIMeta); MedMNIST 2D configs
    have one (``label``, or ``labels`` for ChestMNIST), 3D configs store ``volume``.
    """
    files = config_files(source, config, revision=revision, token=token, streaming=True)
    split = split or ("train" if "train" in files.patterns else next(iter(files.patterns)))
    return read_task_info(split_source(files, split), task, files.split_sizes)


class Loader(DataLoader):
    """A DataLoader over a ``StreamingImageDataset`` that yields whole batches.

    Iterating it starts a new epoch: the first pass is epoch 0, the next 1, and so on, unless
    ``set_epoch`` (which the Trainer calls) says otherwise. With a ``device``, each uint8 batch is
    moved there without blocking and ``transform`` (resize, augment, RGB, normalise) runs there.
    """

    def __init__(self, dataset: StreamingImageDataset, *, device: torch.device | None = None, **kwargs) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self.device = device
        self.transform = dataset.transform
        self.finish: BatchTransform | None = None
        if device is None and self.num_workers > 0 and not self.pin_memory:
            # With workers and no device, batches cross processes as uint8 and are finished here.
            self.finish = dataset.finish_elsewhere()
        elif device is not None and device.type == "cpu" and self.transform.dtype.is_floating_point:
            # The device path on the CPU: the whole transform runs here, into recycled memory as
            # above (fresh memory for every float batch cost a fifth of the throughput at 224 px).
            self.finish = self.transform
        if self.finish is not None and self.num_workers > 0:
            # Every batch is copied into float memory here, so its uint8 memory can be refilled by its
            # worker: queued (prefetch_factor), the one being finished, and some slack.
            dataset.recycle_slots = self.prefetch_factor + 3
        # A worker's UserError (a shard removed or damaged mid-epoch) arrives as a batch and is raised
        # here as its one line, not wrapped in the worker's traceback.
        dataset.report_errors = self.num_workers > 0
        self._next_epoch = 0
        # Slots stay mapped here while their workers may refill them: torch then finds each one
        # in its cache of shared storages instead of mapping it again (a page fault per 4 KiB).
        self._mapped: deque[torch.Tensor] = deque(maxlen=self.num_workers * dataset.recycle_slots)
        self._memory = BatchMemory(keep=3)  # the batch in use, the one before, one spare

    @property
    def info(self) -> TaskInfo:
        return self.dataset.info

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.dataset.info.label_names

    @property
    def task(self) -> str:
        return self.dataset.info.task

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.dataset.set_epoch(self._next_epoch)
        self._next_epoch += 1
        batches = _raising(super().__iter__())
        if self.finish is None and self.device is None:
            yield from batches
            return
        if self.finish is not None:
            # Kept from epoch to epoch, like the workers' slots (see StreamingImageDataset._slot_pool).
            mapped, memory = self._mapped, self._memory
            for batch in batches:
                pixels = batch["pixel_values"]
                finished = self.finish(pixels, memory)
                if batch.get(SLOT_KEY):
                    SlotPool.release(pixels)  # `finished` is a copy: the worker may refill the slot
                    mapped.append(pixels)
                yield {"pixel_values": finished, "labels": batch["labels"]}
            return
        for batch in batches:
            pixels = batch["pixel_values"].to(self.device, non_blocking=True)
            labels = batch["labels"].to(self.device, non_blocking=True)
            yield {"pixel_values": self.transform(pixels), "labels": labels}


def _raising(batches: Iterator[dict]) -> Iterator[dict]:
    for batch in batches:
        if ERROR_KEY in batch:
            raise UserError(batch[ERROR_KEY])
        yield batch


def dataloader(
    source: str | os.PathLike,
    config: str | None = None,
    *,
    split: str = "train",
    batch_size: int = 256,
    image_size: int | tuple[int, ...] | None = None,
    num_workers: int = 0,
    shuffle: bool = False,
    streaming: bool = True,
    task: str | None = None,
    seed: int = 0,
    rgb: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    dtype: torch.dtype = torch.float32,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    drop_last: bool = False,
    shuffle_buffer: int = 4096,
    decode_threads: int | None = None,
    prefetch_factor: int = 2,
    persistent_workers: bool = False,
    pin_memory: bool | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    progress: bool = True,
) -> Loader:
    """Batches of one split, ready for a model.

    - ``source``, ``config``, ``split``, ``task``: what to read (``task`` picks a MedIMeta label column).
    - ``image_size``: output side (or shape); ``rgb``: grayscale to 3 channels; ``mean``/``std``:
      per-channel statistics on the [0, 1] scale; ``dtype``: ``torch.uint8`` for raw pixels;
      ``augment``: a callable on uint8 batches (B, C, H, W) at the output size.
    - ``device``: a device to finish batches on (uint8 crosses the bus; pinned when CUDA).
    - ``shuffle``, ``seed``, ``shuffle_buffer`` (rows), ``drop_last``: epoch order (``set_epoch``).
    - ``num_workers``, ``decode_threads`` (per process; default: CPUs / workers),
      ``prefetch_factor``, ``persistent_workers``, ``pin_memory``: the DataLoader's machinery.
    - ``streaming=False``: decode once into a local pixel cache (``cache_dir``), then read raw.
    - ``rank``/``world_size``: override what torch.distributed or torchrun's variables say.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    target = torch.device(device) if device is not None else None
    dataset = StreamingImageDataset(
        source,
        config,
        split,
        batch_size=batch_size,
        task=task,
        image_size=image_size,
        rgb=rgb,
        mean=mean,
        std=std,
        dtype=dtype,
        augment=augment,
        defer_transform=target is not None,
        shuffle=shuffle,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        streaming=streaming,
        decode_threads=decode_threads,
        cache_dir=cache_dir,
        revision=revision,
        token=token,
        progress=progress,
    )
    batches = len(dataset)
    if num_workers > batches:
        warnings.warn(
            f"{dataset.source.describe()} gives this rank {batches} batch(es) of "
            f"{batch_size}; using {batches} DataLoader worker(s) instead of {num_workers}",
            stacklevel=2,
        )
        num_workers = batches
    if pin_memory is None:
        pin_memory = target is not None and target.type == "cuda"
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers} if num_workers else {}
    return Loader(dataset, device=target, num_workers=num_workers, pin_memory=pin_memory, **extra)
