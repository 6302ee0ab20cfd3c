"""Opening a config to train on, and its splits as ``hfmed.loaders`` batch loaders.

Reading the task needs only the card and one shard's schema, so a bad flag fails before any
pixels or model are loaded. Each split is then one ``hfmed.loaders.dataloader``: whole batches
decoded in its workers, uint8 across processes, resized, augmented and normalised once (on the
accelerator when training on one), each rank reading its own share of the rows. Under
cross-validation the train and validation rows are pooled and the fold's rows come from
``hfmed.training.folds`` instead, through the same batch transform.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import TrainingArguments

from hfmed import loaders, registry
from hfmed.builder import SPLITS
from hfmed.errors import UserError
from hfmed.loaders import TaskInfo
from hfmed.loaders.transforms import Augment, BatchTransform, as_size
from hfmed.training.arguments import DataArguments, ModelArguments
from hfmed.training.models import check_dimensions

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from hfmed.training.folds import Fold, FoldLoader


@dataclass(frozen=True)
class Feed:
    """What the model takes: its input side, channels and normalisation, and the training augmentation."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment | None = None  # a batch augmentation of hfmed.loaders.augment, for training batches only


@dataclass
class Data:
    """One config of a built collection: where it is, what it predicts, how big each split is."""

    location: str  # a local folder, or a Hub repo id
    config: str
    info: TaskInfo
    sizes: dict[str, int]  # rows per split; under cross-validation, the fold's train and validation
    streaming: bool = False
    cv_folds: int | None = None  # cross-validation: train and validation pooled, fold cv_fold held out
    cv_fold: int | None = None
    cv_groups: str | None = None  # a column whose rows share a fold (patient_id)
    eval_test: bool = True  # false: test is never opened (its model is scored later, once)
    split_log: str | None = None  # where each opening of a split is recorded (``--split_log``)
    _fold: Fold | None = field(default=None, repr=False)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits a run opens: cross-validation and ``--eval_test false`` never open test."""
        return ("train", "validation") if self.cv_folds is not None or not self.eval_test else SPLITS

    def fold(self) -> Fold:
        """The pooled rows and this run's fold of them (read once, on first use)."""
        if self._fold is None:
            from hfmed.training.folds import Fold

            self._fold = Fold.read(self.location, self.config, self.info, self.cv_folds, self.cv_fold, self.cv_groups)
            self.sizes = self._fold.sizes
        return self._fold

    def loader(self, split: str, feed: Feed, args: TrainingArguments) -> loaders.Loader | FoldLoader:
        """Whole batches of ``split`` for this process's rank, as the model takes them."""
        if split not in self.splits:
            raise ValueError(f"this run does not open the {split} split (cross-validation or --eval_test false)")
        log_opening(
            self.split_log,
            split,
            self.config,
            args,
            folds=(self.cv_folds, self.cv_fold) if self.cv_folds is not None else None,
        )
        train = split == "train"
        batch = args.per_device_train_batch_size if train else args.per_device_eval_batch_size
        device = args.device if args.device.type != "cpu" else None
        # Training: equal steps on every rank (DDP waits in each all-reduce), so with several
        # ranks each takes the same number of whole batches; evaluation reads every row once.
        drop_last = train and (args.world_size > 1 or args.dataloader_drop_last)
        augment = feed.augment if train else None
        if self.cv_folds is not None:
            return self.fold().loader(
                split,
                batch_size=batch,
                transform=self.transform(feed, augment),
                shuffle=train,
                seed=args.seed,
                drop_last=drop_last,
                device=device,
            )
        workers = args.dataloader_num_workers
        # Persistent workers for training only: evaluation loaders are idle most of a run, and
        # every rank would keep a set of workers per split.
        extra = (
            {
                "prefetch_factor": args.dataloader_prefetch_factor or 2,
                "persistent_workers": args.dataloader_persistent_workers and train,
            }
            if workers
            else {}
        )
        return loaders.dataloader(
            self.location,
            self.config,
            split=split,
            batch_size=batch,
            image_size=feed.image_size,
            num_workers=workers,
            shuffle=train,
            streaming=self.streaming,
            task=self.info.label_column,
            seed=args.seed,
            rgb=self._rgb(feed),
            mean=feed.mean,
            std=feed.std,
            augment=augment,
            device=device,
            drop_last=drop_last,
            progress=False,
            **extra,
        )

    def transform(self, feed: Feed, augment: Augment | None = None) -> BatchTransform:
        """The loaders' batch transform for this model (the fold loader runs it itself)."""
        size = as_size(feed.image_size, len(self.info.image_shape))
        size = None if size == tuple(self.info.image_shape) else size
        t = BatchTransform(size, self._rgb(feed), tuple(feed.mean), tuple(feed.std), torch.float32, augment)
        t.check(self.info.channels, len(self.info.image_shape))
        return t

    def _rgb(self, feed: Feed) -> bool:
        if feed.channels == 1 and self.info.channels == 3:
            raise UserError(
                f"{self.config} has RGB images and the model takes one channel; pick a model with three input channels"
            )
        return feed.channels == 3 and self.info.channels == 1


def config_name(data_args: DataArguments, model_args: ModelArguments | None = None) -> str:
    """The config to open for --subset and --size, as the collection names it."""
    collection = registry.get(data_args.collection)
    config = collection.config_for(data_args.subset, data_args.size)
    subset = data_args.subset or collection.default_config
    check_dimensions(subset, collection.is_volumetric(subset), model_args or ModelArguments())
    return config


def locate(data_args: DataArguments) -> tuple[str, bool]:
    """The dataset folder or Hub repo id, and whether it is local."""
    if data_args.dataset:
        path = Path(data_args.dataset).expanduser()
        if path.is_dir() or (data_args.source and not path.exists()):
            return str(path), True  # with --source, the folder to build into
        return data_args.dataset, False  # a Hub repo id; the loaders say so in one line if it is neither
    default = Path(data_args.collection)
    if default.is_dir() or data_args.source:
        return str(default), True
    raise UserError(
        f"no --dataset given and no ./{data_args.collection} build here; build one "
        f"(`hfmed build {data_args.collection} "
        f"{data_args.subset or '<subset>'}`), pass --source FILE to build it now, or "
        f"pass --dataset my-org/{data_args.collection} (a Hub repo)"
    )


def ensure_built(location: str, config: str, data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Build a missing MedMNIST config from --source first (rank 0 builds, the others wait)."""
    folder = Path(location) / config
    if folder.is_dir() and any(folder.glob("*.parquet")):
        return
    if not data_args.source:
        raise UserError(
            f"{location} has no {config} build; build it with `hfmed build "
            f"{data_args.collection} {config} --out {location}`, "
            f"or pass --source with the official file to build it now"
        )
    from hfmed.writer import build_config

    with training_args.main_process_first(desc=f"building {config}"):
        if not (folder.is_dir() and any(folder.glob("*.parquet"))):
            builder = registry.get(data_args.collection).create(config, data_args.source)
            build_config(builder, location, progress=training_args.local_process_index == 0)


def open_data(
    data_args: DataArguments, training_args: TrainingArguments, model_args: ModelArguments | None = None
) -> Data:
    """The config to train on, for a local build or a Hub repo, checked before anything is loaded."""
    model_args = model_args or ModelArguments()
    config = config_name(data_args, model_args)
    location, is_local = locate(data_args)
    if data_args.cv_folds is not None and not is_local:
        raise UserError(
            "--cv_folds needs a local build (the same rows for every fold and recipe); "
            f"build {config} with `hfmed build` and pass its folder"
        )
    if is_local:
        ensure_built(location, config, data_args, training_args)
    info = loaders.task_info(location, config, data_args.task)
    check_dimensions(config, info.volumetric, model_args)
    missing = [s for s in SPLITS if not info.splits.get(s)]
    if missing:
        raise UserError(
            f"{config} in {location} has no {' or '.join(missing)} split; train_hf.py needs train, validation and test"
        )
    return Data(
        location,
        config,
        info,
        dict(info.splits),
        data_args.streaming,
        data_args.cv_folds,
        data_args.cv_fold,
        data_args.cv_groups,
        data_args.eval_test,
        data_args.split_log,
    )


def log_opening(
    path: str | None, split: str, config: str, args: TrainingArguments, folds: tuple[int, int] | None = None
) -> None:
    """One JSON line per split a rank opens, appended to ``path``: which run read which split.

    ``hfmed benchmark`` gives every run the same file and checks from it that only the final
    evaluation opened test. One short line per write: appends from parallel runs do not interleave.
    """
    if not path:
        return
    import json
    import os

    line = {
        "split": split,
        "config": config,
        "run": str(Path(args.output_dir).resolve()),
        "rank": args.process_index,
        "fold": list(folds) if folds else None,
        "pid": os.getpid(),
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def close_loaders(batch_loaders: Iterable[DataLoader]) -> None:
    """Leave nothing running or open: persistent workers, pixel-cache files, suspended iterators.

    A training run that stops mid-epoch (``--max_steps``) leaves its epoch's iterator suspended,
    holding a decoding thread pool; threads still alive when the interpreter tears down can abort
    it after the run has answered. The collection below finishes such iterators now.
    """
    import gc

    for loader in batch_loaders:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        loader._iterator = None
        cache = getattr(loader.dataset, "pixel_cache", None)
        if cache is not None:
            cache.close()
    gc.collect()
