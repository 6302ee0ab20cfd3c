"""The networks ``train_hf.py`` trains: small from-scratch ViT/ConvNeXt/ResNet/RegNet sized to the data,
or a pretrained image-classification checkpoint with a fresh head.

Sizes and strides are tables, not branches over names; what a model needs fed (side, channels,
mean/std) travels with it in ``ModelBundle``, which is what the batch pipeline reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hfmed import models3d  # registers the 3D configs and models with the Auto classes
from hfmed.errors import UserError, first_line
from hfmed.loaders import TaskInfo
from hfmed.training.arguments import DataArguments, ModelArguments, RecipeArguments

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.image_processing_utils import BaseImageProcessor

#: Spatial dimensions each from-scratch architecture takes: 2 for images, 3 for volumes.
#: A config is refused, before anything is built, when its data and the architecture asked for disagree.
ARCH_DIMENSIONS: dict[str, int] = {
    "resnet": 2,
    "regnet": 2,
    "convnext": 2,
    "vit": 2,
    **{name: 3 for name in models3d.FAMILIES},
}

#: model_type of every saved 3D network, to tell a 3D checkpoint (a 3D run's folder) from a 2D one.
MODEL_TYPES_3D = frozenset(config_class.model_type for config_class, _ in models3d.FAMILIES.values())


def problem_type(info: TaskInfo) -> str:
    """The transformers name of the loss a task needs: BCE per label, or cross-entropy."""
    return "multi_label_classification" if info.task == "multi-label" else "single_label_classification"


def checkpoint_dimensions(model_type: str) -> int:
    return 3 if model_type in MODEL_TYPES_3D else 2


def _local_model_type(model: str) -> str | None:
    """The model_type a local checkpoint folder declares (None: not a local folder, or unreadable)."""
    import json

    path = Path(model).expanduser() / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def refuse_checkpoint_dimensions(config: str, volumetric: bool, model: str, model_type: str) -> None:
    """A 3D checkpoint on 2D images, or a 2D one on volumes: one line."""
    have, want = checkpoint_dimensions(model_type), 3 if volumetric else 2
    if have == want:
        return
    if volumetric:
        raise UserError(
            f"{config} is a 3D subset (volumes) and --model {model} is a 2D image "
            f"classifier ({model_type}); pass a 3D run's folder, "
            f"or train from scratch with --arch {' or '.join(models3d.FAMILIES)}"
        )
    raise UserError(
        f"{config} holds 2D images and --model {model} is a 3D network ({model_type}); "
        "pass a 2D checkpoint or pick a 3D subset"
    )


def check_dimensions(config: str, volumetric: bool, model_args: ModelArguments) -> None:
    """A 3D config with a 2D model, or the reverse, or a size the family lacks: one line, before anything is built.

    A Hub checkpoint's type is known only once its config is read (``load_pretrained`` checks it then).
    """
    want = 3 if volumetric else 2
    if volumetric and model_args.channels_last:
        raise UserError(f"{config} is a 3D subset and --channels_last is a 2D memory format; drop --channels_last")
    if model_args.model:
        model_type = _local_model_type(model_args.model)
        if model_type is not None:
            refuse_checkpoint_dimensions(config, volumetric, model_args.model, model_type)
        return
    have = ARCH_DIMENSIONS.get(model_args.arch, 2)
    if have == want:
        check_arch_size(model_args.arch, model_args.arch_size)
        return
    fitting = [a for a, d in ARCH_DIMENSIONS.items() if d == want]
    if volumetric:
        raise UserError(
            f"{config} is a 3D subset (volumes) and --arch {model_args.arch} is a 2D architecture; "
            + (
                f"use --arch {' or '.join(fitting)}"
                if fitting
                else "no 3D architecture is available yet: pick a 2D subset (`hfmed list medmnist`)"
            )
        )
    raise UserError(
        f"{config} holds 2D images and --arch {model_args.arch} is a 3D architecture; use --arch {' or '.join(fitting)}"
    )


def check_arch_size(arch: str, arch_size: str) -> None:
    sizes = models3d.ARCH_SIZES if ARCH_DIMENSIONS.get(arch) == 3 else ARCH_SIZES[arch]
    if arch_size not in sizes:
        raise UserError(
            f"--arch {arch} comes in sizes {', '.join(sizes)}, not {arch_size}; pass --arch_size with one of them"
        )


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
        "small": {
            "embedding_size": 32,
            "hidden_sizes": [32, 64, 128, 256],
            "depths": [2, 2, 2, 2],
            "layer_type": "basic",
        },
        "base": {
            "embedding_size": 64,
            "hidden_sizes": [64, 128, 256, 512],
            "depths": [2, 2, 2, 2],
            "layer_type": "basic",
        },
    },
    # RegNetY (Radosavovic et al., CVPR 2020): BatchNorm bottlenecks with grouped 3x3 convolutions
    # and squeeze-and-excitation, a second convolutional family (on BreastMNIST's 400 steps it
    # trained far less than the ResNet: BENCHMARKS.md). small = RegNetY-200MF's widths, depths and
    # group width; base = RegNetY-800MF's.
    "regnet": {
        "nano": {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "groups_width": 8},
        "small": {"embedding_size": 32, "hidden_sizes": [24, 56, 152, 368], "depths": [1, 1, 4, 7], "groups_width": 8},
        "base": {"embedding_size": 32, "hidden_sizes": [64, 144, 320, 784], "depths": [1, 3, 8, 2], "groups_width": 16},
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
#: The RegNet stem (3x3 stride 2, no pool) halves the side: 28 px are fed at 56, 64 px and up as
#: they are, and its first stage keeps the stem's grid below 112 px (see scratch_config), so that
#: every stage sees the ResNet's grid at every size.
INPUT_SCALE_FOR_SIZE: dict[str, list[tuple[int, int]]] = {
    "resnet": [(112, 1), (56, 2), (0, 4)],
    "regnet": [(56, 1), (0, 2)],
}

#: Fed sides below this keep the RegNet's first stage at the stem's grid (no stride 2 there).
REGNET_FIRST_STAGE_STRIDE_FROM = 112


def fitted_patch(arch: str, image_size: int) -> int:
    return next(patch for minimum, patch in PATCH_FOR_SIZE[arch] if image_size >= minimum)


def fitted_input_size(arch: str, image_size: int) -> int:
    """The side a from-scratch ``arch`` is fed for images of ``image_size`` (see INPUT_SCALE_FOR_SIZE)."""
    scales = INPUT_SCALE_FOR_SIZE.get(arch)
    if not scales:
        return image_size
    return image_size * next(scale for minimum, scale in scales if image_size >= minimum)


def scratch_config(arch: str, arch_size: str, image_size: int, channels: int, info: TaskInfo) -> PretrainedConfig:
    """A randomly initialised ViT, ConvNeXt, ResNet or RegNet configuration sized to the images, or a 3D network's."""
    from transformers import ConvNextConfig, RegNetConfig, ResNetConfig, ViTConfig

    if ARCH_DIMENSIONS.get(arch) == 3:
        return models3d.scratch_config(
            arch,
            arch_size,
            image_size=image_size,
            channels=channels,
            label_names=info.label_names,
            problem_type=problem_type(info),
        )

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
    if arch == "regnet":
        del common["image_size"]  # as the ResNet's
        first_stride = image_size >= REGNET_FIRST_STAGE_STRIDE_FROM
        return RegNetConfig(**ARCH_SIZES[arch][arch_size], downsample_in_first_stage=first_stride, **common)
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


def _processor_geometry(processor: BaseImageProcessor | None) -> tuple[int | None, tuple | None, tuple | None]:
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
        raise UserError(
            f"{model_id!r} is gated on the Hub: accept its terms on huggingface.co and log "
            "in (`hf auth login`), or pass --model PATH"
        ) from None
    except (RepositoryNotFoundError, HFValidationError):
        raise UserError(
            f"--model {model_id}: neither a local folder nor a model on the Hub (a private one needs `hf auth login`); "
            f"check the name, or train from scratch with --arch convnext or --arch vit"
        ) from None
    except Exception:  # connection refused, DNS failure, timeout, proxy: all mean "use the cache"
        return False
    return True


def apply_overrides(config: PretrainedConfig, overrides: str | None) -> None:
    """``--config_overrides``: typed like the attribute they replace; an unknown key is an error."""
    if not overrides:
        return
    try:
        config.update_from_string(overrides)
    except ValueError as e:
        raise UserError(f"--config_overrides {overrides!r}: {first_line(e)}") from None


def load_pretrained(
    model_id: str, info: TaskInfo, cache_dir: str | None, overrides: str | None = None
) -> tuple[PreTrainedModel, BaseImageProcessor | None]:
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
        refuse_checkpoint_dimensions(
            info.config, info.volumetric, model_id, config.model_type
        )  # a Hub id's type is known only now
        apply_overrides(config, overrides)
        # ignore_mismatched_sizes: the checkpoint's classifier has another number of classes.
        model = AutoModelForImageClassification.from_pretrained(
            where, config=config, ignore_mismatched_sizes=True, **hub
        )
    except UserError:
        raise
    except (OSError, ValueError) as e:
        if is_local:
            raise UserError(
                f"{local}: not an image-classification checkpoint ({first_line(e)}); pass a "
                "folder saved by save_pretrained"
            ) from None
        if not online:
            raise UserError(
                f"cannot reach the Hugging Face Hub to fetch {model_id!r} and it is not in the "
                "local cache; offline, train from "
                f"scratch with --arch convnext or --arch vit, or pass a local checkpoint folder with --model PATH"
            ) from None
        raise UserError(f"{model_id!r} could not be loaded as an image classifier ({first_line(e)})") from None
    try:
        processor = AutoImageProcessor.from_pretrained(where, **hub)
    except (OSError, ValueError):
        processor = None
    return model, processor


def build_model(
    model_args: ModelArguments, recipe_args: RecipeArguments, info: TaskInfo, data_args: DataArguments
) -> ModelBundle:
    """The network to train, and the input geometry and normalisation it wants."""
    from transformers import AutoModelForImageClassification

    half = (0.5,)
    if model_args.model:
        model, processor = load_pretrained(model_args.model, info, model_args.cache_dir, model_args.config_overrides)
        side, mean, std = _processor_geometry(processor)
        config_side = getattr(model.config, "image_size", None)
        image_size = (
            data_args.image_size
            or side
            or (config_side if isinstance(config_side, int) else None)
            or info.image_size
            or 224
        )
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
