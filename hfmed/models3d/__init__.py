"""3D networks for the MedMNIST3D subsets, as transformers models.

The published 3D baselines (Yang et al., "MedMNIST v2", Scientific Data 2023) are ResNet-18 and
ResNet-50 (He et al., "Deep residual learning for image recognition", CVPR 2016) in three forms:

- ``resnet3d``: every kernel k x k x k (``ResNet3dForImageClassification``, model type
  ``hfmed_resnet3d``);
- ``acs``: ACS convolutions (Yang et al., "Reinventing 2D convolutions for 3D images",
  IEEE JBHI 2021): 2D kernels whose output channels are split in three groups, one per plane
  (``ACSResNetForImageClassification``, ``hfmed_acs_resnet``);
- ``resnet2_5d``: 2D kernels (1 x k x k) over the slices, pooled over the volume
  (``ResNet2_5dForImageClassification``, ``hfmed_resnet2_5d``).

Importing this package registers the three configs and models with ``AutoConfig`` and
``AutoModelForImageClassification``, so ``AutoModelForImageClassification.from_pretrained(folder)``
rebuilds a saved model. Sizes, as ``--arch_size`` names them: ``small`` (a narrow, shallow network
for tests and quick CPU runs), ``base`` (ResNet-18) and ``large`` (ResNet-50). The published
training protocol is in :mod:`hfmed.models3d.protocol`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import AutoConfig, AutoModelForImageClassification

from ..errors import UserError
from .configuration import ACSResNetConfig, ResNet2_5dConfig, ResNet3dConfig, VolumeResNetConfig
from .modeling import (
    ACSResNetForImageClassification,
    ResNet2_5dForImageClassification,
    ResNet3dForImageClassification,
    VolumeResNetForImageClassification,
)

#: ``--arch`` name -> (config class, model class).
FAMILIES: dict[str, tuple[type[VolumeResNetConfig], type[VolumeResNetForImageClassification]]] = {
    "resnet3d": (ResNet3dConfig, ResNet3dForImageClassification),
    "acs": (ACSResNetConfig, ACSResNetForImageClassification),
    "resnet2_5d": (ResNet2_5dConfig, ResNet2_5dForImageClassification),
}

#: ``--arch_size`` -> widths and depths, the same for every family. ``base`` and ``large`` are the
#: ResNet-18 and ResNet-50 of MedMNIST/experiments (``MedMNIST3D/models.py``): 64-wide 3x3 stem,
#: stages of 64/128/256/512 (x4 for the bottlenecks).
ARCH_SIZES: dict[str, dict[str, Any]] = {
    "small": {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"},
    "base": {"embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "layer_type": "basic"},
    "large": {
        "embedding_size": 64,
        "hidden_sizes": [256, 512, 1024, 2048],
        "depths": [3, 4, 6, 3],
        "layer_type": "bottleneck",
    },
}

for _config_class, _model_class in FAMILIES.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModelForImageClassification.register(_config_class, _model_class, exist_ok=True)


def scratch_config(
    arch: str,
    arch_size: str,
    *,
    image_size: int,
    channels: int,
    label_names: Sequence[str],
    problem_type: str,
) -> VolumeResNetConfig:
    """A randomly initialised 3D network's configuration, for ``AutoModelForImageClassification.from_config``.

    Args:
        arch: a family of :data:`FAMILIES` (``resnet3d``, ``acs``, ``resnet2_5d``).
        arch_size: a size of :data:`ARCH_SIZES` (``small``, ``base`` = ResNet-18, ``large`` = ResNet-50).
        image_size: side of the training volumes (28 or 64 for MedMNIST3D), saved with the model.
        channels: input channels (1 for MedMNIST3D).
        label_names: one name per output, in label id order.
        problem_type: ``single_label_classification`` or ``multi_label_classification``.
    """
    if arch not in FAMILIES:
        raise UserError(f"unknown 3D architecture {arch!r}; choose one of {', '.join(FAMILIES)}")
    if arch_size not in ARCH_SIZES:
        raise UserError(f"unknown 3D architecture size {arch_size!r}; choose one of {', '.join(ARCH_SIZES)}")
    config_class = FAMILIES[arch][0]
    return config_class(
        num_channels=channels,
        image_size=image_size,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type=problem_type,
        **ARCH_SIZES[arch_size],
    )


__all__ = [
    "ARCH_SIZES",
    "FAMILIES",
    "ACSResNetConfig",
    "ACSResNetForImageClassification",
    "ResNet2_5dConfig",
    "ResNet2_5dForImageClassification",
    "ResNet3dConfig",
    "ResNet3dForImageClassification",
    "VolumeResNetConfig",
    "VolumeResNetForImageClassification",
    "scratch_config",
]
