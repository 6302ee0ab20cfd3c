"""Convolutions and residual blocks of the volumetric ResNets.

The three families are one network with three ways of laying a k x k kernel into a volume
(B, C, D, H, W); everything else (batch norm, strides, pooling) is the same 3D operation. This is
how MedMNIST v2 built its 3D baselines: a 2D ResNet converted by the ACSConv library's
``Conv3dConverter``, ``Conv2_5dConverter`` or ``ACSConverter`` (github.com/M3DV/ACSConv, used by
github.com/MedMNIST/experiments ``MedMNIST3D/train_and_eval_pytorch.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ACSConv3d(nn.Module):
    """ACS convolution (Yang et al., "Reinventing 2D convolutions for 3D images", IEEE JBHI 2021).

    The weight is a 2D kernel, (out, in, k, k). Its output channels are split in three groups
    (sizes as equal as possible, the first groups one larger), and each group's kernel is applied
    as a 3D convolution with one unit dimension: axial (1, k, k), coronal (k, 1, k) and sagittal
    (k, k, 1). The three results are concatenated along the channels. Stride applies to all
    three axes, as in a 3D convolution, so the output has the shape a k^3 convolution would give.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = False
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ACSConv3d keeps the volume's shape with odd kernels only, not {kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        base, extra = divmod(out_channels, 3)
        self.split = tuple(base + (i < extra) for i in range(3))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # What nn.Conv2d does with the same 2D kernel (fan-in = in * k * k).
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            bound = 1 / (self.in_channels * self.kernel_size**2) ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)

    #: How the three planes are computed: "planes" (three flat convolutions, as the paper defines
    #: it, a third of the multiply-adds of a k^3 convolution) or "dense" (one k^3 convolution whose
    #: kernel holds each 2D kernel in its plane and zeros elsewhere). Same output; "planes" is the
    #: default, "dense" is kept for devices where flat kernels are slow (``bench_3d.py --acs_modes``).
    mode: str = "planes"

    def planes_kernel(self) -> torch.Tensor:
        """The (out, in, k, k, k) kernel equivalent to the three flat ones."""
        c = self.kernel_size // 2
        axial, coronal, sagittal = torch.split(self.weight, self.split, dim=0)
        return torch.cat(
            [
                F.pad(axial.unsqueeze(2), (0, 0, 0, 0, c, c)),  # D: centre only
                F.pad(coronal.unsqueeze(3), (0, 0, c, c)),  # H: centre only
                F.pad(sagittal.unsqueeze(4), (c, c)),  # W: centre only
            ],
            dim=0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:  # a 1x1 kernel is the same in every plane: one call
            return F.conv3d(x, self.weight.unsqueeze(2), self.bias, self.stride)
        if self.mode == "dense":
            return F.conv3d(x, self.planes_kernel(), self.bias, self.stride, self.padding)
        p = self.padding
        groups = torch.split(self.weight, self.split, dim=0)
        # The unit axis of each group's kernel gets no padding: output sides stay those of k^3.
        planes = ((2, (0, p, p)), (3, (p, 0, p)), (4, (p, p, 0)))
        out = torch.cat(
            [
                F.conv3d(x, w.unsqueeze(axis), None, self.stride, pad)
                for w, (axis, pad) in zip(groups, planes)
                if w.shape[0]
            ],
            dim=1,
        )
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out

    def extra_repr(self) -> str:
        shape = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        return f"{shape}, stride={self.stride}, split={self.split}"


def conv3d(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    """k x k x k: the 2D kernel grown into the third axis."""
    return nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)


def conv2_5d(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    """1 x k x k, as ACSConv's ``Conv2_5dConverter`` makes it: in-slice only, stride on every axis.

    The stride also steps over slices (as the converter passes the 2D stride to ``nn.Conv3d``
    unchanged), so with depth-1 kernels each strided stage keeps every other slice: after the
    three strided stages of a ResNet, the head sees slices 0, 8, 16, ... of the input. That is
    MedMNIST v2's 2.5D, reproduced as published.
    """
    p = kernel_size // 2
    return nn.Conv3d(in_channels, out_channels, (1, kernel_size, kernel_size), stride, padding=(0, p, p), bias=False)


def acs_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return ACSConv3d(in_channels, out_channels, kernel_size, stride)


#: ``VolumeResNetConfig.convolution`` -> how a k x k kernel becomes a volumetric convolution.
CONVOLUTIONS: dict[str, Callable[[int, int, int, int], nn.Module]] = {"3d": conv3d, "2.5d": conv2_5d, "acs": acs_conv}


class ConvNorm(nn.Sequential):
    """Convolution, then batch norm over (B, D, H, W), then ReLU unless ``activation`` is False."""

    def __init__(
        self,
        make_conv: Callable,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__(make_conv(in_channels, out_channels, kernel_size, stride), nn.BatchNorm3d(out_channels))
        if activation:
            self.append(nn.ReLU(inplace=True))


class Shortcut(nn.Module):
    """Identity, or a strided 1x1 projection with batch norm where the shape changes (He et al. option B)."""

    def __init__(self, make_conv: Callable, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        needed = stride != 1 or in_channels != out_channels
        self.projection = (
            ConvNorm(make_conv, in_channels, out_channels, 1, stride, activation=False) if needed else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.projection is None else self.projection(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34)."""

    def __init__(self, make_conv: Callable, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.shortcut = Shortcut(make_conv, in_channels, out_channels, stride)
        self.layer = nn.Sequential(
            ConvNorm(make_conv, in_channels, out_channels, 3, stride),
            ConvNorm(make_conv, out_channels, out_channels, 3, activation=False),
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.layer(x) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (strided here, as torchvision and MedMNIST do), 1x1 expand by 4 (ResNet-50)."""

    def __init__(self, make_conv: Callable, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        inner = out_channels // 4
        self.shortcut = Shortcut(make_conv, in_channels, out_channels, stride)
        self.layer = nn.Sequential(
            ConvNorm(make_conv, in_channels, inner, 1),
            ConvNorm(make_conv, inner, inner, 3, stride),
            ConvNorm(make_conv, inner, out_channels, 1, activation=False),
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.layer(x) + self.shortcut(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}
