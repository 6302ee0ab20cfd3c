"""The command line of ``train_hf.py``: argument dataclasses, presets, and what they refuse.

Every field of the dataclasses is a flag of the same name (``HfArgumentParser``, as in transformers'
examples). Presets are tables of defaults, not branches: a preset fills the flags a user did not
give, a flag given wins. Combinations of flags that cannot work are refused here, in one line,
before any data or model is touched.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import TrainingArguments
from transformers.hf_argparser import HfArgumentParser

from hfmed.errors import UserError, first_line
from hfmed.models3d.protocol import PUBLISHED_3D
from hfmed.training import mixup
from hfmed.training.hardware import hardware_defaults


@dataclass
class DataArguments:
    """Which data to train on; every field is a command-line flag of the same name."""

    subset: str | None = field(
        default=None,
        metadata={
            "help": "MedMNIST subset (e.g. retinamnist) or MedIMeta dataset id (e.g. dr_regular); "
            "default: the collection's default config"
        },
    )
    collection: str = field(
        default="medmnist", metadata={"help": "which collection the subset belongs to (`hfmed list` names them)"}
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "a built dataset folder or a Hub dataset repo id (my-org/medmnist); default: "
            "./<collection> when it exists"
        },
    )
    size: int = field(default=28, metadata={"help": "MedMNIST image size of the config to use: 28, 64, 128 or 224"})
    task: str | None = field(
        default=None, metadata={"help": "MedIMeta: the task (label column, snake_case) to train on, e.g. dr_level"}
    )
    source: str | None = field(
        default=None,
        metadata={
            "help": "an official MedMNIST .npz (or a folder of them) to build the subset from "
            "first, when the local build lacks it"
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "decode the shards every epoch (a Hub repo: without downloading it); default: "
            "decode each split once into a local pixel cache ($HFMED_CACHE)"
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "resize images to this side before the model; default: what a pretrained model "
            "expects, else the data's own size"
        },
    )
    cv_folds: int | None = field(
        default=None,
        metadata={
            "help": "cross-validation for choosing a recipe: pool train and validation, split them "
            "into this many folds "
            "(stratified by label, always the same folds), train on all but --cv_fold and "
            "validate on it; test is not used"
        },
    )
    cv_fold: int | None = field(default=None, metadata={"help": "with --cv_folds K: the held-out fold, 0 to K-1"})
    cv_groups: str | None = field(
        default=None,
        metadata={
            "help": "with --cv_folds: a column (e.g. patient_id, as MedIMeta has) whose rows "
            "always share a fold, so no patient "
            "is both trained on and held out; folds stay as close to stratified by label as the groups allow"
        },
    )
    eval_test: bool = field(
        default=True,
        metadata={
            "help": "false: train and validate on the official split without opening test (no test "
            "rows are read); score the "
            "chosen model once later with `--model <this run's folder> --do_train false`"
        },
    )
    split_log: str | None = field(
        default=None,
        metadata={
            "help": "append one JSON line per split this run opens (split, run folder, rank) to "
            "this file: a record of which run read test"
        },
    )


@dataclass
class ModelArguments:
    """Which network: a checkpoint to fine-tune, or a small architecture trained from scratch."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "an image-classification checkpoint: Hub id (facebook/convnext-tiny-224) or "
            "local folder; overrides --arch"
        },
    )
    arch: Literal["resnet", "regnet", "convnext", "vit", "resnet3d", "acs", "resnet2_5d"] = field(
        default="resnet",
        metadata={
            "help": "architecture trained from scratch when no --model is given. 2D: resnet (the "
            "default, the MedMNIST v2 baselines' "
            "family, trains best on small subsets; see BENCHMARKS.md), regnet (RegNetY), convnext, vit. 3D "
            "subsets: resnet3d (their default), acs "
            "(ACS convolutions), resnet2_5d (2D kernels over the slices)"
        },
    )
    arch_size: Literal["nano", "small", "base", "large"] = field(
        default="small",
        metadata={
            "help": "width/depth of the from-scratch model: nano (2D only; tests, seconds), small "
            "(default; the regnet is RegNetY-200MF), base (ViT-B / "
            "ConvNeXt-T / ResNet-18 / RegNetY-800MF), large (3D only: ResNet-50)"
        },
    )
    ordinal_loss: Literal["cross_entropy", "emd"] = field(
        default="cross_entropy",
        metadata={
            "help": "ordinal tasks: cross_entropy (as published) or emd (cross-entropy plus "
            "squared earth mover's distance between class CDFs)"
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "model config values to change, as in transformers' examples: "
            "'drop_path_rate=0.1,layer_norm_eps=1e-6'"
        },
    )
    channels_last: bool | None = field(
        default=None,
        metadata={
            "help": "channels-last memory format (faster convolutions); default: on for "
            "convolutional models such as ConvNeXt"
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "where downloaded checkpoints are stored"})


@dataclass
class RecipeArguments:
    """The protocol: a named preset, plus the parts of it that TrainingArguments has no flag for."""

    preset: Literal["medmnist", "finetune"] = field(
        default="medmnist",
        metadata={
            "help": "medmnist: the published MedMNIST v2 protocol (from scratch, 100 epochs, Adam "
            "1e-3, x0.1 at epochs 50 and 75, "
            "batch 128, best validation AUC; 3D subsets: batch 32, x0.1 at half and three "
            "quarters of the epochs). finetune: a pretrained checkpoint, AdamW, warmup + "
            "cosine, augmentation. "
            "Flags you give override the preset."
        },
    )
    lr_decay_epochs: list[float] = field(
        default_factory=list,
        metadata={
            "help": "multiply the learning rate by --lr_decay_gamma at these epochs (on top of --lr_scheduler_type)"
        },
    )
    lr_decay_gamma: float = field(default=0.1, metadata={"help": "factor applied at each --lr_decay_epochs milestone"})
    augment: Literal["none", "flip_crop", "affine"] = field(
        default="none",
        metadata={
            "help": "training-image augmentation: flip_crop (flip, shift by whole pixels), affine "
            "(flip, rotation, shift, scale)"
        },
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "keep an exponential moving average of the weights with this decay per step (e.g. 0.99); "
            "validation, checkpoints and the final model use the average"
        },
    )
    mixup_alpha: float | None = field(
        default=None,
        metadata={
            "help": "mixup: train on pairs of images mixed with a weight drawn from Beta(alpha, alpha) per "
            "batch, their losses mixed alike (e.g. 0.2); validation and test see the images as they are"
        },
    )
    tta: Literal["none", "flip"] = field(
        default="none",
        metadata={
            "help": "test-time augmentation on validation and test: flip averages the logits of "
            "each image and its mirror"
        },
    )
    normalize: Literal["half", "model"] = field(
        default="half",
        metadata={
            "help": "half: (x - 0.5) / 0.5 as the MedMNIST experiments do; model: the mean/std of "
            "a pretrained checkpoint"
        },
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
    "remove_unused_columns": False,  # batches come from hfmed's loaders, never from a datasets.Dataset
    # Training workers live for the whole run: re-forking the Trainer's process (torch and
    # transformers loaded) every epoch cost a third of the input rate at 28 px (BENCHMARKS.md).
    "dataloader_persistent_workers": True,
    "report_to": "none",
    # Every rank's loader reads its own share (hfmed.loaders.plan): accelerate must neither send
    # batches from rank 0 nor cut them (the Trainer's loaders are never passed to it anyway).
    "accelerator_config": '{"dispatch_batches": false, "split_batches": false}',
    "per_device_eval_batch_size": 256,
    "do_train": True,
    "do_eval": True,
    "do_predict": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # MedMNIST/experiments (see loading_scripts/medmnist.yaml, medmnist_v2_2d.protocol).
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
#: MedMNIST v2's 3D protocol (hfmed.models3d.protocol.PUBLISHED_3D, read from MedMNIST/experiments'
#: 3D training script), over the 2D preset it shares everything else with.
_P3 = PUBLISHED_3D
MEDMNIST_3D: dict[str, Any] = {
    "num_train_epochs": _P3.num_train_epochs,
    "per_device_train_batch_size": _P3.per_device_train_batch_size,
    "learning_rate": _P3.learning_rate,
    "weight_decay": _P3.weight_decay,
    "lr_decay_gamma": _P3.lr_gamma,
}

#: The from-scratch architecture of a 3D subset when --arch is not given: the true 3D ResNet,
#: not the published default (ACS): at 28^3 on one CPU core it trains 1.9x faster than ACS at
#: the same size (oneDNN's 3x3x3 kernels are its fast path; BENCHMARKS.md, 3D networks), and its
#: published ResNet-18 rows average 0.849 test AUC over the six subsets against ACS's 0.843.
#: 2.5D is faster still but published well below both. ``--arch_size`` stays ``small``, as for 2D.
DEFAULT_3D_ARCH = "resnet3d"


def preset_defaults(preset: str, volumetric: bool, epochs: float | None = None) -> dict[str, Any]:
    """The values ``preset`` fills in; on a 3D subset ``medmnist`` is the published 3D protocol.

    The 3D script steps its learning rate down at fractions of its epochs, so the milestones
    follow ``epochs`` (the --num_train_epochs given, else the protocol's 100: epochs 50 and 75).
    """
    if not volumetric:
        return dict(PRESETS[preset])
    if preset != "medmnist":
        raise UserError(
            f"--preset {preset} fine-tunes a 2D checkpoint; 3D subsets train from scratch: use --preset medmnist"
        )
    epochs = _P3.num_train_epochs if epochs is None else epochs
    milestones = [round(f * epochs, 6) for f in _P3.lr_milestones]
    return {**PRESETS["medmnist"], **MEDMNIST_3D, "lr_decay_epochs": milestones}


def is_volumetric(collection: str, subset: str | None) -> bool:
    """Whether a subset holds volumes (unknown names are refused later, with the list)."""
    from hfmed import registry

    return bool(subset) and collection in registry.names() and registry.get(collection).is_volumetric(subset)


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


def parse_args(
    argv: list[str] | None = None,
) -> tuple[DataArguments, ModelArguments, RecipeArguments, TrainingArguments]:
    """Parse flags with presets as defaults: a preset fills what is not given, a given flag wins."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(
        ARGUMENT_TYPES, description="Train an image classifier on a MedMNIST subset or a MedIMeta task."
    )
    explicit = _explicit_flags(parser, argv)
    first, _ = parser.parse_known_args(argv)
    volumetric = is_volumetric(first.collection, first.subset)
    epochs = first.num_train_epochs if "num_train_epochs" in explicit else None
    defaults = {
        **COMMON_DEFAULTS,
        **hardware_defaults(first.use_cpu),
        **preset_defaults(first.preset, volumetric, epochs),
    }
    if volumetric:
        defaults["arch"] = DEFAULT_3D_ARCH
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
        parsed = tuple(parser.parse_args_into_dataclasses(argv, look_for_args_file=False))
    except UserError:
        raise
    except ValueError as e:  # TrainingArguments' own checks on combinations of flags
        raise UserError(f"invalid training arguments: {first_line(e)}") from None
    refuse_impossible(*parsed)
    return parsed


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


def refuse_impossible(
    data_args: DataArguments, model_args: ModelArguments, recipe_args: RecipeArguments, args: TrainingArguments
) -> None:
    """Flag combinations that cannot work, refused before any data or model is loaded."""
    check_cv(data_args)
    accel = args.accelerator_config
    for name in ("dispatch_batches", "split_batches"):
        if getattr(accel, name, None):
            raise UserError(
                f"accelerator_config {name}=true would hand out or cut batches that every rank "
                "already reads for itself "
                "(hfmed's loaders give each rank its own share of the rows); leave it unset"
            )
    if args.fsdp or args.deepspeed:
        raise UserError(
            "--fsdp and --deepspeed shard the model, and train_hf.py evaluates each rank's "
            "share of the rows on a whole copy of it; "
            "train with plain DDP (torchrun without those flags)"
        )
    if data_args.cv_folds is not None and data_args.streaming:
        raise UserError(
            "--streaming with --cv_folds: a fold reads the pooled train and validation "
            "rows once, into memory; drop --streaming"
        )
    if (
        data_args.cv_folds is not None
        and data_args.dataset
        and not Path(data_args.dataset).expanduser().is_dir()
        and not data_args.source
    ):
        raise UserError(
            "--cv_folds needs a local build (the same rows for every fold and recipe), and "
            f"{data_args.dataset} is not a folder here; "
            f"download or build it (`hfmed build`) and pass its folder with --dataset"
        )
    if recipe_args.ema_decay is not None and not 0.0 < recipe_args.ema_decay < 1.0:
        raise UserError(f"--ema_decay must be between 0 and 1 (exclusive), got {recipe_args.ema_decay}")
    if recipe_args.mixup_alpha is not None:
        mixup.checked(recipe_args.mixup_alpha)


def check_cv(data_args: DataArguments) -> None:
    folds, fold = data_args.cv_folds, data_args.cv_fold
    if folds is None:
        if fold is not None:
            raise UserError(
                f"--cv_fold {fold} needs --cv_folds (the number of folds), e.g. --cv_folds 5 --cv_fold {fold}"
            )
        if data_args.cv_groups is not None:
            raise UserError(
                f"--cv_groups {data_args.cv_groups} groups cross-validation folds; give it with "
                "--cv_folds K --cv_fold i"
            )
        return
    if folds < 2:
        raise UserError(f"--cv_folds must be at least 2, got {folds}")
    if fold is None or not 0 <= fold < folds:
        raise UserError(f"--cv_fold must name the held-out fold, 0 to {folds - 1} for --cv_folds {folds}; got {fold}")
