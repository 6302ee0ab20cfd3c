"""Configurations of the volumetric ResNets: one ``PretrainedConfig`` per family, one shape for all.

The three families share every field; only ``model_type`` (and so the class the Auto classes
build) differs, and with it how each 2D-style kernel is laid into the volume
(``hfmed.models3d.layers``). Field names follow transformers' ``ResNetConfig``: ``hidden_sizes``
are the output widths of the four stages (a bottleneck's inner width is a quarter of it).
"""

from __future__ import annotations

from transformers import PretrainedConfig

LAYER_TYPES = ("basic", "bottleneck")


# FIELDS_BY_INIT: transformers 5 turns every config subclass into a dataclass and generates an
# __init__ for it unless the class itself defines one; the three families restate the shared
# __init__ so that they keep it (transformers 4 simply inherits it).


class VolumeResNetConfig(PretrainedConfig):
    """A CIFAR-style ResNet for (B, C, D, H, W) volumes, as in MedMNIST v2's 3D experiments.

    The stem is one 3x3 convolution with stride 1 and no max-pooling, so the first stage sees
    the whole 28^3 (or 64^3) volume; stages 2-4 halve every side (Yang et al., MedMNIST v2,
    Scientific Data 2023, whose ResNets follow He et al., CVPR 2016, sized for 28 px inputs).

    Args:
        num_channels: channels of the input volume (1 for every MedMNIST 3D subset).
        embedding_size: width of the stem.
        hidden_sizes: output width of each stage.
        depths: residual blocks per stage.
        layer_type: ``basic`` (two 3x3 convolutions: ResNet-18/34) or ``bottleneck``
            (1x1, 3x3, 1x1 with a 4x wider output: ResNet-50).
        image_size: side of the volumes the model was trained on. The network takes any size;
            this is kept so that a saved model is fed what it was trained on.
    """

    model_type = "hfmed_volume_resnet"
    #: How a k x k kernel is laid into the volume: "3d", "acs" or "2.5d" (see layers.py).
    convolution = "3d"

    def __init__(
        self,
        num_channels: int = 1,
        embedding_size: int = 64,
        hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512),
        depths: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        layer_type: str = "basic",
        image_size: int = 28,
        **kwargs,
    ) -> None:
        if layer_type not in LAYER_TYPES:
            raise ValueError(f"layer_type must be one of {LAYER_TYPES}, not {layer_type!r}")
        if len(hidden_sizes) != len(depths):
            raise ValueError(
                f"hidden_sizes ({len(hidden_sizes)} stages) and depths ({len(depths)}) must have the same length"
            )
        if layer_type == "bottleneck" and any(width % 4 for width in hidden_sizes):
            raise ValueError(f"a bottleneck stage's width must be a multiple of 4: {list(hidden_sizes)}")
        self.num_channels = int(num_channels)
        self.embedding_size = int(embedding_size)
        self.hidden_sizes = [int(w) for w in hidden_sizes]
        self.depths = [int(d) for d in depths]
        self.layer_type = layer_type
        self.image_size = int(image_size)
        super().__init__(**kwargs)


class ResNet3dConfig(VolumeResNetConfig):
    """True 3D ResNet: every k x k kernel of the 2D network becomes k x k x k (``nn.Conv3d``)."""

    model_type = "hfmed_resnet3d"
    convolution = "3d"
    __init__ = VolumeResNetConfig.__init__  # see FIELDS_BY_INIT


class ACSResNetConfig(VolumeResNetConfig):
    """ResNet with ACS convolutions (Yang et al., "Reinventing 2D convolutions for 3D images",
    IEEE JBHI 2021): 2D kernels whose output channels are split in three, one third applied in
    each of the axial, coronal and sagittal planes."""

    model_type = "hfmed_acs_resnet"
    convolution = "acs"
    __init__ = VolumeResNetConfig.__init__  # see FIELDS_BY_INIT


class ResNet2_5dConfig(VolumeResNetConfig):
    """2.5D ResNet as MedMNIST v2 defines it: 2D (1 x k x k) kernels over the slices, with the
    strides, batch norm statistics and final average pooling taken over the whole volume."""

    model_type = "hfmed_resnet2_5d"
    convolution = "2.5d"
    __init__ = VolumeResNetConfig.__init__  # see FIELDS_BY_INIT
