"""The volumetric ResNets as transformers image classifiers.

One network (``VolumeResNet``), three ``PreTrainedModel`` classes: each family's class differs only
in its ``config_class``, whose ``convolution`` says how the kernels are laid into the volume. So
``save_pretrained``/``from_pretrained``, the Auto classes, the Trainer and its checkpoints treat
them as any transformers model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

try:  # transformers 5: init functions that leave weights loaded from a checkpoint alone
    from transformers import initialization as init
except ImportError:  # transformers 4 initialises only the missing weights by itself
    from torch.nn import init

from .configuration import ACSResNetConfig, ResNet2_5dConfig, ResNet3dConfig, VolumeResNetConfig
from .layers import BLOCKS, CONVOLUTIONS, ACSConv3d, ConvNorm


class VolumeResNet(nn.Module):
    """Stem, four stages and global average pooling: (B, C, D, H, W) -> (B, hidden_sizes[-1])."""

    def __init__(self, config: VolumeResNetConfig) -> None:
        super().__init__()
        make_conv = CONVOLUTIONS[config.convolution]
        block = BLOCKS[config.layer_type]
        self.stem = ConvNorm(make_conv, config.num_channels, config.embedding_size, 3, 1)
        stages, width = [], config.embedding_size
        for i, (out, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
            stride = 1 if i == 0 else 2
            blocks = [block(make_conv, width if j == 0 else out, out, stride if j == 0 else 1) for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            width = out
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool3d(1)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        hidden = self.stem(pixel_values)
        states = [hidden]
        for stage in self.stages:
            hidden = stage(hidden)
            states.append(hidden)
        pooled = self.pool(hidden).flatten(1)
        return pooled, (tuple(states) if output_hidden_states else None)


class VolumeResNetPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the transformers plumbing shared by the three families."""

    config_class = VolumeResNetConfig
    base_model_prefix = "resnet"
    main_input_name = "pixel_values"
    _no_split_modules = ["ConvNorm"]

    def _init_weights(self, module: nn.Module) -> None:
        # He et al. (2015) normal init, fan-out, for every kernel (torchvision's ResNet does the
        # same); the ACS kernel is 2D, so its fan is that of the 2D kernel it is.
        if isinstance(module, (nn.Conv3d, ACSConv3d)):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm3d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            # The running statistics too: a model built on the meta device has none set.
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            # nn.Linear's own default: uniform in +-1/sqrt(fan_in), for weight and bias.
            bound = 1 / module.in_features**0.5
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)


class VolumeResNetForImageClassification(VolumeResNetPreTrainedModel):
    """A volumetric ResNet with a linear head: ``pixel_values`` (B, C, D, H, W) -> ``logits`` (B, num_labels)."""

    def __init__(self, config: VolumeResNetConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.resnet = VolumeResNet(config)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        if pixel_values is None:
            raise ValueError("pixel_values (B, C, D, H, W) is required")
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be (B, C, D, H, W) volumes, got shape {tuple(pixel_values.shape)}")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        pooled, hidden_states = self.resnet(pixel_values, output_hidden_states)
        logits = self.classifier(pooled)
        # transformers' own image-classification loss: cross-entropy, BCE per label or MSE by
        # config.problem_type (inferred from the labels' dtype when unset).
        loss = None if labels is None else self.loss_function(labels, logits, self.config)
        if not return_dict:
            out = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return (loss,) + out if loss is not None else out
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


class ResNet3dForImageClassification(VolumeResNetForImageClassification):
    """ResNet with k^3 kernels (He et al., CVPR 2016, in 3D; MedMNIST v2's "ResNet + 3D")."""

    config_class = ResNet3dConfig


class ACSResNetForImageClassification(VolumeResNetForImageClassification):
    """ResNet with ACS convolutions (Yang et al., IEEE JBHI 2021; MedMNIST v2's "ResNet + ACS")."""

    config_class = ACSResNetConfig


class ResNet2_5dForImageClassification(VolumeResNetForImageClassification):
    """ResNet with 1 x k x k kernels over the slices (MedMNIST v2's "ResNet + 2.5D")."""

    config_class = ResNet2_5dConfig
