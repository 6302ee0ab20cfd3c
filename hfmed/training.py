"""What ``train_hf.py`` is made of: arguments and presets, models, the batch pipeline, the report.

The script itself stays a short Trainer script in the shape of transformers' image-classification
example; everything here is reusable on its own (a notebook can build the same model, collator
and report). Facts (published baselines, MedMNIST task types) come from the tables in
``hfmed/facts``; presets and model sizes are tables below, not branches over names.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import math
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.hf_argparser import HfArgumentParser

from hfmed import facts, loaders
from hfmed.errors import UserError
from hfmed.loaders import TaskInfo

# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


@dataclass
class DataArguments:
    """Which data to train on; every field is a command-line flag of the same name."""

    subset: str | None = field(
        default=None,
        metadata={"help": "MedMNIST subset (e.g. retinamnist) or MedIMeta dataset id (e.g. dr_regular); default: the collection's default config"},
    )
    collection: Literal["medmnist", "medimeta"] = field(default="medmnist", metadata={"help": "which collection the subset belongs to"})
    dataset: str | None = field(
        default=None,
        metadata={"help": "a built dataset folder or a Hub dataset repo id (my-org/medmnist); default: ./<collection> when it exists"},
    )
    size: int = field(default=28, metadata={"help": "MedMNIST image size of the config to use: 28, 64, 128 or 224"})
    task: str | None = field(default=None, metadata={"help": "MedIMeta: the task (label column, snake_case) to train on, e.g. dr_level"})
    source: str | None = field(
        default=None,
        metadata={"help": "an official MedMNIST .npz (or a folder of them) to build the subset from first, when the local build lacks it"},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "decode the shards every epoch (a Hub repo: without downloading it); default: decode each split once into a local pixel cache ($HFMED_CACHE)"},
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "resize images to this side before the model; default: what a pretrained model expects, else the data's own size"},
    )
    cv_folds: int | None = field(
        default=None,
        metadata={
            "help": "cross-validation for choosing a recipe: pool train and validation, split them into this many folds "
            "(stratified by label, always the same folds), train on all but --cv_fold and validate on it; test is not used"
        },
    )
    cv_fold: int | None = field(default=None, metadata={"help": "with --cv_folds K: the held-out fold, 0 to K-1"})


@dataclass
class ModelArguments:
    """Which network: a checkpoint to fine-tune, or a small architecture trained from scratch."""

    model: str | None = field(
        default=None,
        metadata={"help": "an image-classification checkpoint: Hub id (facebook/convnext-tiny-224) or local folder; overrides --arch"},
    )
    arch: Literal["resnet", "convnext", "vit"] = field(
        default="resnet",
        metadata={"help": "architecture trained from scratch when no --model is given (resnet, the default, is the MedMNIST v2 baselines' family "
                  "and trains best on small subsets; see BENCHMARKS.md)"},
    )
    arch_size: Literal["nano", "small", "base"] = field(
        default="small",
        metadata={"help": "width/depth of the from-scratch model: nano (tests, seconds), small (default), base (ViT-B / ConvNeXt-T / ResNet-18)"},
    )
    ordinal_loss: Literal["cross_entropy", "emd"] = field(
        default="cross_entropy",
        metadata={"help": "ordinal tasks: cross_entropy (as published) or emd (cross-entropy plus squared earth mover's distance between class CDFs)"},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "model config values to change, as in transformers' examples: 'drop_path_rate=0.1,layer_norm_eps=1e-6'"},
    )
    channels_last: bool | None = field(
        default=None, metadata={"help": "channels-last memory format (faster convolutions); default: on for convolutional models such as ConvNeXt"}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "where downloaded checkpoints are stored"})


@dataclass
class RecipeArguments:
    """The protocol: a named preset, plus the parts of it that TrainingArguments has no flag for."""

    preset: Literal["medmnist", "finetune"] = field(
        default="medmnist",
        metadata={
            "help": "medmnist: the published MedMNIST v2 protocol (from scratch, 100 epochs, Adam 1e-3, x0.1 at epochs 50 and 75, "
            "batch 128, best validation AUC). finetune: a pretrained checkpoint, AdamW, warmup + cosine, augmentation. "
            "Flags you give override the preset."
        },
    )
    lr_decay_epochs: list[float] = field(
        default_factory=list,
        metadata={"help": "multiply the learning rate by --lr_decay_gamma at these epochs (on top of --lr_scheduler_type)"},
    )
    lr_decay_gamma: float = field(default=0.1, metadata={"help": "factor applied at each --lr_decay_epochs milestone"})
    augment: Literal["none", "flip_crop", "affine"] = field(
        default="none",
        metadata={"help": "training-image augmentation: flip_crop (flip, shift by whole pixels), affine (flip, rotation, shift, scale)"},
    )
    ema_decay: float | None = field(
        default=None,
        metadata={"help": "keep an exponential moving average of the weights with this decay per step (e.g. 0.99); "
                  "validation, checkpoints and the final model use the average"},
    )
    tta: Literal["none", "flip"] = field(
        default="none",
        metadata={"help": "test-time augmentation on validation and test: flip averages the logits of each image and its mirror"},
    )
    normalize: Literal["half", "model"] = field(
        default="half",
        metadata={"help": "half: (x - 0.5) / 0.5 as the MedMNIST experiments do; model: the mean/std of a pretrained checkpoint"},
    )


#: Values a preset fills in for flags the user did not give. ``optim="adamw_torch"`` with no weight
#: decay is Adam exactly: decoupled decay of zero leaves Adam's update unchanged.
COMMON_DEFAULTS: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "save_total_limit": 1,
    "load_best_model_at_end": True,
    "metric_for_best_model": "auc",
    "greater_is_better": True,
    "remove_unused_columns": False,  # the collator needs the image column that the model's forward() does not name
    "report_to": "none",
    "per_device_eval_batch_size": 256,
    "do_train": True,
    "do_eval": True,
    "do_predict": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # MedMNIST/experiments (see hfmed/facts/baselines.yaml, medmnist_v2_2d.protocol).
    "medmnist": {
        "num_train_epochs": 100,
        "per_device_train_batch_size": 128,
        "optim": "adamw_torch",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "lr_decay_epochs": [50, 75],
        "lr_decay_gamma": 0.1,
        "augment": "none",
        "normalize": "half",
    },
    # Close to the MedMNIST+ fine-tuning protocol (AdamW, cosine), with warmup and augmentation.
    "finetune": {
        "model": "facebook/convnext-tiny-224",
        "num_train_epochs": 30,
        "per_device_train_batch_size": 64,
        "optim": "adamw_torch",
        "learning_rate": 1e-4,
        "weight_decay": 0.05,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "lr_decay_epochs": [],
        "augment": "affine",
        "normalize": "model",
    },
}

#: A preset value is dropped when the user sets the flag on the left: they describe one thing.
#: Choosing a scheduler replaces the preset's step decay rather than stacking on it.
PRESET_LINKS: dict[str, tuple[str, ...]] = {"lr_scheduler_type": ("lr_decay_epochs",)}

ARGUMENT_TYPES = (DataArguments, ModelArguments, RecipeArguments, TrainingArguments)


def _explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations the user actually wrote on the command line (not filled from defaults)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(namespace))


def hardware_defaults(use_cpu: bool) -> dict[str, Any]:
    """Speed settings that are right on the machine at hand; CPU runs get none of them."""
    if use_cpu or not torch.cuda.is_available():
        return {"dataloader_num_workers": 0, "dataloader_pin_memory": False}
    # Under torchrun the Trainer dispatches IterableDataset batches from rank 0, whose workers
    # therefore read for every GPU of the node: give them the CPUs the other ranks leave idle.
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = max(1, min(8, (os.cpu_count() or 2) - local_procs))
    out: dict[str, Any] = {"dataloader_num_workers": workers, "dataloader_persistent_workers": True, "dataloader_pin_memory": True}
    major, _ = torch.cuda.get_device_capability()
    if major >= 8:  # Ampere and later: bf16 autocast and TF32 matmuls
        out.update(bf16=True, tf32=True)
    else:
        out.update(fp16=True)
    return out


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, ModelArguments, RecipeArguments, TrainingArguments]:
    """Parse flags with presets as defaults: a preset fills what is not given, a given flag wins."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARGUMENT_TYPES, description=__doc__.splitlines()[0])
    explicit = _explicit_flags(parser, argv)
    first, _ = parser.parse_known_args(argv)
    defaults = {**COMMON_DEFAULTS, **hardware_defaults(first.use_cpu), **PRESETS[first.preset]}
    for flag, linked in PRESET_LINKS.items():
        if flag in explicit:
            for name in linked:
                defaults.pop(name, None)
    if "arch" in explicit and "model" not in explicit:
        defaults.pop("model", None)  # --arch asks for training from scratch, whatever checkpoint a preset names
    defaults = {k: v for k, v in defaults.items() if k not in explicit}
    if "output_dir" not in explicit:
        defaults["output_dir"] = str(default_output_dir({**vars(first), **defaults}))
    parser.set_defaults(**defaults)
    try:
        return tuple(parser.parse_args_into_dataclasses(argv, look_for_args_file=False))
    except ValueError as e:  # TrainingArguments' own checks on combinations of flags
        raise UserError(f"invalid training arguments: {_first_line(e)}") from None


def default_output_dir(values: dict[str, Any]) -> Path:
    """runs/<config>[-<task>]-<model>: one folder per experiment, readable in a listing."""
    subset = values["subset"] or "default"
    if values["collection"] == "medmnist" and values["size"] != 28:
        subset = f"{subset}_{values['size']}"
    parts = [subset] + ([values["task"]] if values["task"] else [])
    parts.append(Path(values["model"]).name if values.get("model") else f"{values['arch']}-{values['arch_size']}")
    if values.get("cv_folds"):
        parts.append(f"fold{values.get('cv_fold')}of{values['cv_folds']}")
    return Path("runs") / "-".join(parts)


# --------------------------------------------------------------------------------------------
# What is being predicted
# --------------------------------------------------------------------------------------------


def problem_type(info: TaskInfo) -> str:
    """The transformers name of the loss a task needs: BCE per label, or cross-entropy."""
    return "multi_label_classification" if info.task == "multi-label" else "single_label_classification"


def medmnist_config(subset: str, size: int) -> str:
    """The config name MedMNIST uses for a subset at a size (``pneumoniamnist``, ``pneumoniamnist_64``)."""
    table = facts.load("medmnist")["subsets"]
    if subset not in table:
        raise UserError(f"unknown MedMNIST subset {subset!r}; `hfmed list medmnist` shows the valid names")
    entry = table[subset]
    if entry["volumetric"]:
        raise UserError(
            f"{subset} is a 3D subset (volumes, not images) and train_hf.py trains 2D image classifiers: train a 3D network on "
            f"its `volume` column (e.g. the 3D or ACS ResNets of MedMNIST/experiments), or pick a 2D subset (`hfmed list medmnist`)"
        )
    sizes = sorted(entry["md5"])
    if size not in sizes:
        raise UserError(f"{subset} comes in sizes {', '.join(map(str, sizes))}, not {size}; pass --size with one of them")
    return subset if size == 28 else f"{subset}_{size}"


# --------------------------------------------------------------------------------------------
# Data: where it is, what it predicts, and the three splits (the one seam to the loaders)
# --------------------------------------------------------------------------------------------

SPLITS = ("train", "validation", "test")


@dataclass
class Data:
    """One config of a built collection: where it is, what it predicts, how big each split is.

    Reading the task needs only the card and one shard's schema, so a bad flag fails before any
    pixels or model are loaded; ``splits()`` then opens the three splits through the project's
    loaders, each yielding ``{"pixel_values": uint8 (C, H, W), "labels": ...}`` examples.
    """

    location: str  # a local folder, or a Hub repo id
    config: str
    info: TaskInfo
    sizes: dict[str, int]  # rows per split
    streaming: bool = False
    seed: int = 0
    cv_folds: int | None = None  # cross-validation: train and validation pooled, fold cv_fold held out
    cv_fold: int | None = None

    def splits(self) -> dict[str, Any]:
        """train, validation and test; under cross-validation, train and validation of the fold only."""
        if self.cv_folds is None:
            return {s: _load_split(self, s) for s in SPLITS}
        pooled = [
            {"pixel_values": example["pixel_values"].clone(), "labels": example["labels"].clone()}
            for split in ("train", "validation")
            for example in _load_split(self, split, shuffle=False)
        ]
        if len(pooled) < 2 * self.cv_folds:
            raise UserError(f"{self.config} in {self.location} has {len(pooled)} train and validation rows, too few for --cv_folds {self.cv_folds}; use fewer folds")
        fold_of = cv_assignment(np.stack([example["labels"].numpy() for example in pooled]), self.cv_folds)
        held_out = fold_of == self.cv_fold
        train = Rows([pooled[i] for i in np.flatnonzero(~held_out)])
        validation = Rows([pooled[i] for i in np.flatnonzero(held_out)])
        self.sizes = {"train": len(train), "validation": len(validation)}  # the fold's, for steps per epoch and the report
        return {"train": train, "validation": validation}


#: Seed of the fold assignment. Fixed, so that every recipe and every training seed is validated
#: on the same folds and their scores can be compared fold by fold.
CV_SEED = 0


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


class Rows(torch.utils.data.Dataset):
    """Examples held in memory (a cross-validation fold), read by index."""

    def __init__(self, examples: list[dict[str, Any]]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


def check_cv(data_args: DataArguments) -> None:
    folds, fold = data_args.cv_folds, data_args.cv_fold
    if folds is None:
        if fold is not None:
            raise UserError(f"--cv_fold {fold} needs --cv_folds (the number of folds), e.g. --cv_folds 5 --cv_fold {fold}")
        return
    if folds < 2:
        raise UserError(f"--cv_folds must be at least 2, got {folds}")
    if fold is None or not 0 <= fold < folds:
        raise UserError(f"--cv_fold must name the held-out fold, 0 to {folds - 1} for --cv_folds {folds}; got {fold}")


def config_name(data_args: DataArguments) -> str:
    if data_args.collection == "medmnist":
        subset = data_args.subset or _default_config("medmnist")
        return medmnist_config(subset, data_args.size)
    if not data_args.subset:
        raise UserError("name a MedIMeta dataset with --subset (e.g. --subset dr_regular --task dr_level); `hfmed list medimeta` shows them")
    return data_args.subset


def _default_config(collection: str) -> str:
    from hfmed.builder import builder_class

    return builder_class(collection).default_config


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
        f"no --dataset given and no ./{data_args.collection} build here; build one (`hfmed build {data_args.collection} "
        f"{data_args.subset or '<subset>'}`), pass --source FILE to build it now, or pass --dataset my-org/{data_args.collection} (a Hub repo)"
    )


def ensure_built(location: str, config: str, data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Build a missing MedMNIST config from --source first (rank 0 builds, the others wait)."""
    folder = Path(location) / config
    if folder.is_dir() and any(folder.glob("*.parquet")):
        return
    if not data_args.source:
        raise UserError(
            f"{location} has no {config} build; build it with `hfmed build {data_args.collection} {config} --out {location}`, "
            f"or pass --source with the official file to build it now"
        )
    from hfmed.builder import builder_class
    from hfmed.writer import build_config

    with training_args.main_process_first(desc=f"building {config}"):
        if not (folder.is_dir() and any(folder.glob("*.parquet"))):
            builder = builder_class(data_args.collection)(config, data_args.source)
            build_config(builder, location, progress=training_args.local_process_index == 0)


def open_data(data_args: DataArguments, training_args: TrainingArguments) -> Data:
    """The config to train on, for a local build or a Hub repo, checked before anything is loaded."""
    check_cv(data_args)
    config = config_name(data_args)
    location, is_local = locate(data_args)
    if is_local:
        ensure_built(location, config, data_args, training_args)
    info = loaders.task_info(location, config, data_args.task)
    if info.volumetric:
        raise UserError(f"{config} holds volumes, not images; train_hf.py trains 2D image classifiers (use a 3D network on its `{info.image_column}` column)")
    missing = [s for s in SPLITS if not info.splits.get(s)]
    if missing:
        raise UserError(f"{config} in {location} has no {' or '.join(missing)} split; train_hf.py needs train, validation and test")
    dispatch = getattr(training_args.accelerator_config, "dispatch_batches", None)
    if dispatch is False and training_args.world_size > 1:
        raise UserError("accelerator_config dispatch_batches=false would shard the loaders' rows twice; leave it unset (rank 0 reads, the Trainer dispatches)")
    return Data(location, config, info, dict(info.splits), data_args.streaming, training_args.seed, data_args.cv_folds, data_args.cv_fold)


def _load_split(data: "Data", split: str, shuffle: bool | None = None):
    """One split as single uint8 examples: the Collator batches, resizes and normalises them.

    Under torchrun the Trainer's accelerator dispatches batches from rank 0 for an
    IterableDataset, so the dataset reads every row itself (``world_size=1``); each validation and
    test row is then scored once, and the padding of a short last batch is dropped by
    ``gather_for_metrics``.
    """
    return loaders.StreamingImageDataset(
        data.location,
        data.config,
        split,
        batch_size=None,
        task=data.info.label_column,
        dtype=torch.uint8,
        shuffle=split == "train" if shuffle is None else shuffle,
        seed=data.seed,
        rank=0,
        world_size=1,
        streaming=data.streaming,
        progress=False,
    )


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

#: Widths and depths of the from-scratch models. ``base`` is ViT-B / ConvNeXt-T / ResNet-18.
ARCH_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "vit": {
        "nano": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        "small": {"hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 3, "intermediate_size": 768},
        "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    },
    "convnext": {
        "nano": {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
        "small": {"hidden_sizes": [32, 64, 128, 256], "depths": [2, 2, 4, 2]},
        "base": {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3]},
    },
    "resnet": {
        "nano": {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "layer_type": "basic"},
        "small": {"embedding_size": 32, "hidden_sizes": [32, 64, 128, 256], "depths": [2, 2, 2, 2], "layer_type": "basic"},
        "base": {"embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "layer_type": "basic"},
    },
}

#: (smallest image side, patch or stem stride): the first stride that applies to the image.
#: ViT: 28 px -> 4 px patches (7x7 tokens), 64 -> 8 (8x8), 128 -> 16 (8x8), 224 -> 16 (14x14).
#: ConvNeXt: 28 px keeps full resolution in the first stage (as the 28 px ResNets of the MedMNIST
#: experiments do), 64 px halves it, 112 px and up use the standard 4x4 stem.
PATCH_FOR_SIZE: dict[str, list[tuple[int, int]]] = {
    "vit": [(112, 16), (56, 8), (0, 4)],
    "convnext": [(112, 4), (56, 2), (0, 1)],
}


#: (smallest image side, input upscaling) for architectures whose stem cannot be re-strided. The
#: ResNet stem (7x7 stride 2, max-pool) divides the side by 4; the MedMNIST 28 px ResNets replace
#: it with a 3x3 stride-1 convolution so that the first stage sees 28x28. transformers' ResNet has
#: one stem, so the input is enlarged instead: 28 px -> 112 px puts the first stage at 28x28 as
#: published (64 -> 128 at 32x32); 112 px and up are used as they are, as ImageNet ResNets are.
INPUT_SCALE_FOR_SIZE: dict[str, list[tuple[int, int]]] = {"resnet": [(112, 1), (56, 2), (0, 4)]}


def fitted_patch(arch: str, image_size: int) -> int:
    return next(patch for minimum, patch in PATCH_FOR_SIZE[arch] if image_size >= minimum)


def fitted_input_size(arch: str, image_size: int) -> int:
    """The side a from-scratch ``arch`` is fed for images of ``image_size`` (see INPUT_SCALE_FOR_SIZE)."""
    scales = INPUT_SCALE_FOR_SIZE.get(arch)
    if not scales:
        return image_size
    return image_size * next(scale for minimum, scale in scales if image_size >= minimum)


def scratch_config(arch: str, arch_size: str, image_size: int, channels: int, info: TaskInfo):
    """A randomly initialised ViT, ConvNeXt or ResNet configuration sized to the images."""
    from transformers import ConvNextConfig, ResNetConfig, ViTConfig

    common = {
        "num_channels": channels,
        "image_size": image_size,
        "num_labels": info.num_labels,
        "id2label": dict(enumerate(info.label_names)),
        "label2id": {name: i for i, name in enumerate(info.label_names)},
        "problem_type": problem_type(info),
    }
    if arch == "resnet":
        del common["image_size"]  # a ResNet takes any size; the input is fitted by fitted_input_size
        return ResNetConfig(**ARCH_SIZES[arch][arch_size], **common)
    patch = fitted_patch(arch, image_size)
    if arch == "vit":
        return ViTConfig(patch_size=patch, encoder_stride=patch, **ARCH_SIZES[arch][arch_size], **common)
    return ConvNextConfig(patch_size=patch, **ARCH_SIZES[arch][arch_size], **common)


@dataclass
class ModelBundle:
    """The model and what the batch pipeline must feed it."""

    model: torch.nn.Module
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # checkpoint id/path, or "scratch:<arch>-<size>"


def _processor_geometry(processor) -> tuple[int | None, tuple | None, tuple | None]:
    if processor is None:
        return None, None, None
    size = getattr(processor, "size", None) or {}
    if not isinstance(size, dict):
        size = dict(size) if hasattr(size, "keys") else {}
    side = size.get("height") or size.get("shortest_edge")
    mean = getattr(processor, "image_mean", None)
    std = getattr(processor, "image_std", None)
    return side, (tuple(mean) if mean is not None else None), (tuple(std) if std is not None else None)


def hub_reachable(model_id: str) -> bool:
    """Whether to ask the Hub for ``model_id``: one quick request instead of the library's retries.

    Unreachable (offline mode, no network) means: use the local cache only. A repository the
    Hub says does not exist, or is gated, ends here with what to do about it.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        HfApi().model_info(model_id, timeout=10)
    except GatedRepoError:
        raise UserError(f"{model_id!r} is gated on the Hub: accept its terms on huggingface.co and log in (`hf auth login`), or pass --model PATH") from None
    except (RepositoryNotFoundError, HFValidationError):
        raise UserError(
            f"--model {model_id}: neither a local folder nor a model on the Hub (a private one needs `hf auth login`); "
            f"check the name, or train from scratch with --arch convnext or --arch vit"
        ) from None
    except Exception:  # connection refused, DNS failure, timeout, proxy: all mean "use the cache"
        return False
    return True


def apply_overrides(config, overrides: str | None) -> None:
    """``--config_overrides``: typed like the attribute they replace; an unknown key is an error."""
    if not overrides:
        return
    try:
        config.update_from_string(overrides)
    except ValueError as e:
        raise UserError(f"--config_overrides {overrides!r}: {_first_line(e)}") from None


def load_pretrained(model_id: str, info: TaskInfo, cache_dir: str | None, overrides: str | None = None):
    """A checkpoint with a fresh head for this task; one clear line when it cannot be had."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    local = Path(model_id).expanduser()
    is_local = local.exists()
    online = False if is_local else hub_reachable(model_id)
    where = str(local) if is_local else model_id
    hub = {"cache_dir": cache_dir, "local_files_only": not online}
    head = {
        "num_labels": info.num_labels,
        "id2label": dict(enumerate(info.label_names)),
        "label2id": {name: i for i, name in enumerate(info.label_names)},
        "problem_type": problem_type(info),
    }
    try:
        config = AutoConfig.from_pretrained(where, **head, **hub)
        apply_overrides(config, overrides)
        # ignore_mismatched_sizes: the checkpoint's classifier has another number of classes.
        model = AutoModelForImageClassification.from_pretrained(where, config=config, ignore_mismatched_sizes=True, **hub)
    except (OSError, ValueError) as e:
        if is_local:
            raise UserError(f"{local}: not an image-classification checkpoint ({_first_line(e)}); pass a folder saved by save_pretrained") from None
        if not online:
            raise UserError(
                f"cannot reach the Hugging Face Hub to fetch {model_id!r} and it is not in the local cache; offline, train from "
                f"scratch with --arch convnext or --arch vit, or pass a local checkpoint folder with --model PATH"
            ) from None
        raise UserError(f"{model_id!r} could not be loaded as an image classifier ({_first_line(e)})") from None
    try:
        processor = AutoImageProcessor.from_pretrained(where, **hub)
    except (OSError, ValueError):
        processor = None
    return model, processor


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def build_model(model_args: ModelArguments, recipe_args: RecipeArguments, info: TaskInfo, data_args: DataArguments) -> ModelBundle:
    """The network to train, and the input geometry and normalisation it wants."""
    from transformers import AutoModelForImageClassification

    half = (0.5,)
    if model_args.model:
        model, processor = load_pretrained(model_args.model, info, model_args.cache_dir, model_args.config_overrides)
        side, mean, std = _processor_geometry(processor)
        config_side = getattr(model.config, "image_size", None)
        image_size = data_args.image_size or side or (config_side if isinstance(config_side, int) else None) or info.image_size or 224
        channels = int(getattr(model.config, "num_channels", 3) or 3)
        if recipe_args.normalize == "model" and mean is not None and std is not None:
            mean_t, std_t = mean, std
        else:
            mean_t, std_t = half * channels, half * channels
        source = model_args.model
    else:
        image_size = data_args.image_size or fitted_input_size(model_args.arch, info.image_size or 28)
        channels = info.channels
        config = scratch_config(model_args.arch, model_args.arch_size, image_size, channels, info)
        apply_overrides(config, model_args.config_overrides)
        # Saved with the model, so that `--model <this run's folder>` feeds it the same size again
        # (a ResNet config has no size of its own, and 28 px images are fed to it at 112).
        if getattr(config, "image_size", None) is None:
            config.image_size = int(image_size)
        model = AutoModelForImageClassification.from_config(config)
        mean_t, std_t = half * channels, half * channels
        source = f"scratch:{model_args.arch}-{model_args.arch_size}"
    if len(mean_t) != channels:
        mean_t, std_t = (mean_t[0],) * channels, (std_t[0],) * channels
    return ModelBundle(model, int(image_size), channels, tuple(mean_t), tuple(std_t), source)


def wants_channels_last(model_args: ModelArguments, model: torch.nn.Module) -> bool:
    """Channels-last for convolutional models unless told otherwise.

    cuDNN's NHWC kernels are the fast path on GPUs, and oneDNN's are on CPUs too: ConvNeXt
    trained 1.2-5x faster channels-last on the CPU here (28 px, batch 128).
    """
    if model_args.channels_last is not None:
        return model_args.channels_last
    return getattr(model.config, "model_type", "") in CHANNELS_LAST_MODELS


CHANNELS_LAST_MODELS = ("convnext", "convnextv2", "resnet", "regnet", "efficientnet", "mobilenet_v2")


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass
class FlipCrop:
    """Random horizontal flip and a random shift by whole pixels (zero padding), per image.

    The classic augmentation of tiny images (CIFAR's pad-and-crop): every pixel keeps its value,
    where any rotation or rescaling resamples, and at 28 px blurs, the texture of the image.
    """

    pad: float = 0.125  # of the image side: 4 px at 28-32 px
    flip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        p = max(1, round(self.pad * max(h, w)))
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
        if self.flip:
            flipped = torch.rand(n, generator=generator) < 0.5
            out[flipped] = out[flipped].flip(-1)
        return out


@dataclass
class Affine:
    """Random horizontal flip plus a small random rotation, shift and scaling, one warp per batch.

    Batched on tensors (no torchvision needed): one ``affine_grid`` + ``grid_sample`` for the
    whole batch, wherever the collator runs.
    """

    degrees: float = 15.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    flip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.degrees)
        scale = self.scale[0] + torch.rand(n, generator=generator) * (self.scale[1] - self.scale[0])
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * self.translate * 2  # grid units span 2
        sign = torch.ones(n)
        if self.flip:
            sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos * sign, -sin, shift[:, 0]], 1), torch.stack([sin * sign, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


#: ``--augment`` choices; each applies to float training batches in [0, 1] before normalisation.
AUGMENTATIONS: dict[str, type | None] = {"none": None, "flip_crop": FlipCrop, "affine": Affine}


def make_augment(name: str):
    cls = AUGMENTATIONS[name]
    return cls() if cls is not None else None


@dataclass
class Collator:
    """Stacks decoded images into the model's input: channels, size, augmentation, normalisation.

    Examples arrive as ``{"pixel_values": uint8 or float tensor (C, H, W), "labels": ...}``;
    uint8 is scaled to [0, 1]. Grayscale is repeated to three channels when the model expects
    three. Multi-label targets become float multi-hot rows, as BCE wants them.
    """

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    multi_label: bool = False
    augment: Any = None  # FlipCrop, Affine or None
    channels_last: bool = False
    resize_mode: str = "bilinear"

    def pixels(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([torch.as_tensor(i) for i in images])
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        else:
            x = x.float()
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise ValueError(f"images have {x.shape[1]} channels; the model expects {self.channels}")
        if x.shape[-2:] != (self.image_size, self.image_size):
            kwargs = {"align_corners": False, "antialias": True} if self.resize_mode == "bilinear" else {}
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode=self.resize_mode, **kwargs)
        if self.augment is not None:
            x = self.augment(x)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixel_values = self.pixels([e["pixel_values"] for e in examples])
        labels = [e["labels"] for e in examples]
        if self.multi_label:
            target = torch.stack([torch.as_tensor(np.asarray(l), dtype=torch.float32) for l in labels])
        else:
            target = torch.as_tensor([int(l) for l in labels], dtype=torch.long)
        return {"pixel_values": pixel_values, "labels": target}


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def ordinal_emd_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy plus the squared earth mover's distance between predicted and true class CDFs.

    Keeps one logit per class (so the MedMNIST metrics read the softmax as usual) while charging
    a prediction two grades off more than one grade off, which plain cross-entropy does not.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    logits = logits.float()
    probs = logits.softmax(-1)
    target = F.one_hot(labels, logits.shape[-1]).float()
    emd = (probs.cumsum(-1) - target.cumsum(-1)).pow(2).sum(-1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    total = (ce + emd).sum()
    return total / num_items_in_batch if num_items_in_batch else total / labels.shape[0]


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class WeightAverage:
    """An exponential moving average of a model's parameters, for evaluating and keeping.

    On a few hundred training images the weights of one step are a noisy draw; their running
    average scores more steadily from epoch to epoch, which is what selecting the best epoch on a
    small validation split needs. Buffers (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = self.checked(decay)
        self.params = {name for name, _ in model.named_parameters()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @staticmethod
    def checked(decay: float) -> float:
        if not 0.0 < decay < 1.0:
            raise UserError(f"--ema_decay must be between 0 and 1 (exclusive), got {decay}")
        return decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            average = self.shadow[name]
            if name in self.params and value.dtype.is_floating_point:
                average.lerp_(value.detach(), 1.0 - self.decay)
            else:
                average.copy_(value)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block, its own again after it."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(own)


class _AverageEachStep(TrainerCallback):
    def __init__(self, trainer: "MedTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        # Here, not in train(): a checkpoint being resumed has been loaded into the model by now.
        self.trainer.weight_average = WeightAverage(self.trainer.model, self.trainer.ema_decay)

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.weight_average is not None:
            self.trainer.weight_average.update(self.trainer.model)


class MedTrainer(Trainer):
    """The stock Trainer plus what the protocols need and TrainingArguments lacks.

    - Step decay at given epochs (the MedMNIST protocol's x0.1 at epochs 50 and 75), applied as a
      factor on top of whichever ``--lr_scheduler_type`` is in use.
    - A training collator of its own (augmentation) while evaluation batches stay untouched.
    - Timing of pure training: wall time minus evaluation, checkpointing and reloading the best
      checkpoint, and images seen.
    - Optionally, a moving average of the weights (``--ema_decay``): evaluated and checkpointed in
      place of the raw weights during training, so the best checkpoint is the best average; and
      flip test-time augmentation (``--tta flip``) in every evaluation.
    """

    def __init__(
        self,
        *args,
        train_collator=None,
        lr_decay_steps: list[int] | None = None,
        lr_decay_gamma: float = 0.1,
        ema_decay: float | None = None,
        tta: str = "none",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.ema_decay = ema_decay
        self.weight_average: WeightAverage | None = None
        self.tta = tta
        if ema_decay is not None:
            WeightAverage.checked(ema_decay)  # before anything is trained
            self.add_callback(_AverageEachStep(self))
        self.train_collator = train_collator
        self.lr_decay_steps = sorted(lr_decay_steps or [])
        self.lr_decay_gamma = lr_decay_gamma
        self.images_seen = 0
        self.side_seconds = 0.0  # time spent evaluating and saving inside train()

    def get_train_dataloader(self):
        if self.train_collator is None:
            return super().get_train_dataloader()
        eval_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if created and self.lr_decay_steps:
            lambdas = getattr(scheduler, "lr_lambdas", None)
            if lambdas is None:
                raise UserError(f"--lr_decay_epochs cannot be combined with --lr_scheduler_type {self.args.lr_scheduler_type.value}; drop one of them")
            milestones, gamma = self.lr_decay_steps, self.lr_decay_gamma
            scheduler.lr_lambdas = [
                (lambda step, base=base: base(step) * gamma ** bisect.bisect_right(milestones, step)) for base in lambdas
            ]
            # LambdaLR set the first learning rate from the old lambdas; step 0 is before any milestone.
        return scheduler

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.images_seen += int(inputs["pixel_values"].shape[0])
        return super().training_step(model, inputs, num_items_in_batch)

    def train(self, *args, **kwargs):
        try:
            result = super().train(*args, **kwargs)
            if self.weight_average is not None and not self.args.load_best_model_at_end:
                self.model.load_state_dict(self.weight_average.shadow)  # the average is the model
            return result
        finally:
            self.weight_average = None

    @contextmanager
    def _averaged(self):
        if self.weight_average is None:
            yield
        else:
            with self.weight_average.applied(self.model):
                yield

    def evaluate(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            with self._averaged():
                return super().evaluate(*args, **kwargs)
        finally:
            if self.is_in_train:
                self.side_seconds += time.perf_counter() - start

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if self.tta == "flip" and not prediction_loss_only and isinstance(logits, torch.Tensor):
            mirrored = {**inputs, "pixel_values": inputs["pixel_values"].flip(-1)}
            _, other, _ = super().prediction_step(model, mirrored, False, ignore_keys=ignore_keys)
            logits = (logits + other) / 2
        return loss, logits, labels

    def create_model_card(self, *args, **kwargs) -> None:
        """The Trainer's card, followed by results.md (this run beside the published figures).

        Overridden rather than appended to once, because ``push_to_hub`` writes the card again
        right before uploading it.
        """
        super().create_model_card(*args, **kwargs)
        out = Path(self.args.output_dir)
        card, results = out / "README.md", out / "results.md"
        if self.is_world_process_zero() and card.is_file() and results.is_file():
            section = "\n".join("#" + line if line.startswith("#") else line for line in results.read_text(encoding="utf-8").splitlines())
            card.write_text(card.read_text(encoding="utf-8").rstrip() + "\n\n## Results\n\n" + section + "\n", encoding="utf-8")

    def _load_best_model(self) -> None:
        """Restore the selected checkpoint through ``from_pretrained``.

        transformers 5 saves some models (ViT among them) under their original checkpoint key
        names, while the stock ``_load_best_model`` loads the raw file into the live model with
        ``strict=False``: for those models nothing is restored and the last epoch, not the best,
        would be tested. ``from_pretrained`` applies the key conversion, and loading its state
        dict strictly makes any other mismatch an error instead of a warning.
        """
        start = time.perf_counter()  # inside train(), but not training: kept out of the images/s
        try:
            checkpoint = self.state.best_model_checkpoint
            if not checkpoint or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return super()._load_best_model()
            model = self.accelerator.unwrap_model(self.model)
            if not hasattr(type(model), "from_pretrained"):
                return super()._load_best_model()
            best = type(model).from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
            model.load_state_dict(best.state_dict(), strict=True)
        finally:
            self.side_seconds += time.perf_counter() - start

    def _save_checkpoint(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            with self._averaged():
                return super()._save_checkpoint(*args, **kwargs)
        finally:
            self.side_seconds += time.perf_counter() - start


def steps_per_epoch(num_train: int, args: TrainingArguments) -> int:
    """Optimizer steps in one epoch, as the Trainer counts them (padded last batch per process)."""
    batches = math.ceil(num_train / (args.per_device_train_batch_size * max(1, args.world_size)))
    if args.dataloader_drop_last:
        batches = num_train // (args.per_device_train_batch_size * max(1, args.world_size))
    return max(1, math.ceil(batches / args.gradient_accumulation_steps))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def scored(task: str, label_ids, predictions) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) from what ``Trainer.predict`` returns."""
    from hfmed import metrics

    logits = predictions[0] if isinstance(predictions, (tuple, list)) else predictions
    y_true = np.asarray(label_ids)
    if task == "multi-label":
        y_true = np.rint(y_true).astype(np.int64)
    return y_true, metrics.scores_from_logits(task, logits)


def write_report(out: Path, results: dict[str, Any], info: TaskInfo, outputs: dict[str, tuple[Any, Any]]) -> None:
    """results.json, results.md, the two figures and predictions.npz.

    ``outputs`` maps each evaluated split to what ``Trainer.predict`` returned for it,
    ``(label_ids, predictions)``: validation and test, or validation alone in a cross-validation
    run. predictions.npz holds every split's labels and probabilities (what ``hfmed ensemble``
    averages); the figures show test, or the held-out fold when test was not evaluated.
    """
    out.mkdir(parents=True, exist_ok=True)
    scores = {split: scored(info.task, *pair) for split, pair in outputs.items()}
    write_predictions(out, scores)
    split = "test" if "test" in scores else "validation"
    y_true, y_score = scores[split]
    cv = results.get("cross_validation")
    title = f"{results['config']} {results['task']} ({split}" + (f", fold {cv['fold']} of {cv['folds']})" if cv else ")")
    plot_roc(out / "roc_curve.png", info.task, info.label_names, y_true, y_score, title)
    plot_confusion(out / "confusion_matrix.png", info.task, info.label_names, y_true, y_score, title)
    results["published"] = published_for(results) if not cv else []
    write_json(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(results, results["published"]), encoding="utf-8")


def published_for(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The published rows for a run's subset (tables name MedMNIST subsets without the size suffix)."""
    subset = results["config"].split("_", 1)[0] if results["collection"] == "medmnist" else results["config"]
    return published_rows(results["collection"], subset)


def write_predictions(out: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """predictions.npz: ``<split>_labels`` and ``<split>_scores`` (probabilities) per split."""
    arrays = {}
    for split, (y_true, y_score) in splits.items():
        arrays[f"{split}_labels"] = np.asarray(y_true)
        arrays[f"{split}_scores"] = np.asarray(y_score, dtype=np.float64)
    tmp = out / "predictions.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(out / PREDICTIONS_FILE)


PREDICTIONS_FILE = "predictions.npz"


def published_rows(collection: str, subset: str) -> list[dict[str, Any]]:
    """Every published result for this subset: table title, source, method, auc/acc."""
    rows = []
    for key, table in facts.load("baselines").items():
        if table["collection"] != collection:
            continue
        for row in table["rows"]:
            result = row["results"].get(subset)
            if result:
                rows.append({"table": table["title"], "source": table["source"], "method": row["method"], **result})
    return rows


def device_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"


def _fmt(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def results_markdown(results: dict[str, Any], published: list[dict[str, Any]]) -> str:
    """This run next to the published rows of the same subset (test AUC / ACC)."""
    subset = results["subset"] + (f" / {results['task']}" if results.get("task_column_chosen") else "")
    cv = results.get("cross_validation")
    if cv:
        return _cv_markdown(results, subset, cv)
    lines = [
        f"# {subset}: {results['model']}",
        "",
        f"Task: {results['task_type']} ({results['num_labels']} classes), {results['image_size']} px input, "
        f"model selected on validation {results['selection_metric'].upper()}; test evaluated once.",
        "",
        "| | test AUC | test ACC | validation AUC | validation ACC |",
        "|---|---|---|---|---|",
        f"| **this run** ({results['model']}) | **{_fmt(results['test'].get('auc'))}** | **{_fmt(results['test'].get('acc'))}** "
        f"| {_fmt(results['validation'].get('auc'))} | {_fmt(results['validation'].get('acc'))} |",
    ]
    tables: list[str] = []
    for row in published:
        if row["table"] not in tables:
            tables.append(row["table"])
        lines.append(f"| {row['method']} [{tables.index(row['table']) + 1}] | {_fmt(row.get('auc'))} | {_fmt(row.get('acc'))} | | |")
    if published:
        lines += ["", "Published figures (test split):", ""]
        sources = {row["table"]: row["source"] for row in published}
        lines += [f"{i + 1}. {title}: {sources[title]}" for i, title in enumerate(tables)]
    else:
        lines += ["", "No published figures for this subset in hfmed/facts/baselines.yaml."]
    return "\n".join(lines + _run_footer(results))


def _run_footer(results: dict[str, Any]) -> list[str]:
    """Where and how fast the run went, and the command that reproduces it."""
    return [
        "",
        f"Wall time {results['wall_time_seconds']:.0f} s on {results['device']} ({results['num_processes']} process(es)); "
        f"training {_fmt_rate(results['train_images_per_second'])} images/s, evaluation {_fmt_rate(results['eval_images_per_second'])} images/s.",
        "",
        "Command:",
        "",
        "```",
        results["command"],
        "```",
        "",
    ]


def _cv_markdown(results: dict[str, Any], subset: str, cv: dict[str, Any]) -> str:
    """A cross-validation fold: its validation figures only; published (test) rows are not comparable."""
    return "\n".join([
        f"# {subset}: {results['model']}, cross-validation fold {cv['fold']} of {cv['folds']}",
        "",
        f"Task: {results['task_type']} ({results['num_labels']} classes), {results['image_size']} px input. Train and validation "
        f"were pooled and split into {cv['folds']} folds (stratified, seed {cv['seed']}); this run trained on "
        f"{results['num_samples']['train']} rows and validated on the {results['num_samples']['validation']} of fold {cv['fold']}, "
        f"its checkpoint chosen there on {results['selection_metric'].upper()}. The test split was not used. Compare recipes "
        "by the mean of their folds; published figures are test figures and are not shown beside these.",
        "",
        "| | fold AUC | fold ACC |",
        "|---|---|---|",
        f"| **this run** ({results['model']}) | **{_fmt(results['validation'].get('auc'))}** | **{_fmt(results['validation'].get('acc'))}** |",
        *_run_footer(results),
    ])


def _fmt_rate(value: float | None) -> str:
    return "–" if not value else f"{value:.1f}"


def plot_roc(path: Path, task: str, label_names: tuple[str, ...], y_true: np.ndarray, y_score: np.ndarray, title: str) -> None:
    """One ROC curve per class (one-vs-rest) or label; the positive class only for binary tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    if task == "binary":
        curves = [(label_names[-1], (y_true == 1).astype(int), y_score[:, -1] if y_score.ndim == 2 else y_score)]
    elif task == "multi-label":
        curves = [(name, y_true[:, i], y_score[:, i]) for i, name in enumerate(label_names)]
    else:
        curves = [(name, (y_true == i).astype(int), y_score[:, i]) for i, name in enumerate(label_names)]
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, target, score in curves:
        if target.min() == target.max():
            continue  # no curve without both outcomes
        fpr, tpr, _ = roc_curve(target, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(target, score):.3f})", linewidth=1.2)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(path: Path, task: str, label_names: tuple[str, ...], y_true: np.ndarray, y_score: np.ndarray, title: str) -> None:
    """The confusion matrix at the metrics' own decision rule (argmax, or 0.5 per label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    if task == "multi-label":
        matrices = multilabel_confusion_matrix(y_true, (y_score > 0.5).astype(int))
        cols = min(4, len(label_names))
        rows = math.ceil(len(label_names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.4 * rows), squeeze=False)
        for ax, name, m in zip(axes.flat, label_names, matrices):
            _draw_matrix(ax, m, ("no", "yes"), name)
        for ax in list(axes.flat)[len(label_names):]:
            ax.axis("off")
        fig.suptitle(title)
    else:
        predicted = (y_score[:, -1] > 0.5).astype(int) if task == "binary" else y_score.argmax(-1)
        m = confusion_matrix(y_true, predicted, labels=list(range(len(label_names))))
        side = max(4.0, 0.6 * len(label_names) + 2)
        fig, ax = plt.subplots(figsize=(side, side))
        _draw_matrix(ax, m, label_names, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_matrix(ax, matrix: np.ndarray, names, title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(names))
    short = [n if len(n) <= 18 else n[:17] + "…" for n in names]
    ax.set_xticks(ticks, short, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(ticks, short, fontsize="small")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black", fontsize="small")


SECRET_FLAGS = ("--hub_token", "--hub-token")


def redacted_command(argv: list[str]) -> list[str]:
    """The command line as given, with any token replaced: it is written into results and cards."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("<HUB_TOKEN>")
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in SECRET_FLAGS:
            out.append(f"{flag}=<HUB_TOKEN>" if eq else flag)
            hide_next = not eq
            continue
        out.append(arg)
    return out


def json_safe(value: Any) -> Any:
    """Arguments and metrics as JSON: NaN as null, paths and enums as strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "value"):  # enums
        return json_safe(value.value)
    return str(value)


def arguments_record(*argument_objects) -> dict[str, Any]:
    """Every argument of the run; TrainingArguments.to_dict() already hides tokens."""
    out = {}
    for obj in argument_objects:
        name = type(obj).__name__
        out[name] = obj.to_dict() if isinstance(obj, TrainingArguments) else dataclasses.asdict(obj)
    return json_safe(out)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
