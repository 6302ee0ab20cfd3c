"""Random augmentations of whole uint8 batches, as ``dataloader(..., augment=...)`` takes them.

Each is a small picklable dataclass (it travels into DataLoader workers) called on a uint8 batch
at the output size, ``(B, C, H, W)`` or, where it says so, ``(B, C, D, H, W)``, and returning a
uint8 batch of the same shape on the same device: it runs wherever the loader's transform runs,
in the workers on the CPU or on the accelerator after the batch has crossed the bus. Random draws
are made on the batch's device from torch's generator there (each DataLoader worker has its own
seed), or from ``generator`` when one is given.

    from hfmed import loaders
    from hfmed.loaders.augment import FlipCrop
    train = loaders.dataloader("medmnist", "breastmnist", augment=FlipCrop(), shuffle=True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hfmed.errors import UserError


def _check_uint8(x: torch.Tensor, dims: tuple[int, ...], name: str) -> None:
    if x.dtype != torch.uint8 or x.dim() not in dims:
        shapes = " or ".join({4: "(B, C, H, W)", 5: "(B, C, D, H, W)"}[d] for d in dims)
        raise UserError(f"{name} takes uint8 batches {shapes}; got {x.dtype} {tuple(x.shape)}")


@dataclass(frozen=True)
class FlipCrop:
    """Random flips along ``flip_axes`` and a random shift by whole pixels (zero fill), per image.

    The classic augmentation of tiny images (CIFAR's pad-and-crop): every pixel keeps its value,
    where a rotation or rescaling resamples and, at 28 px, blurs the texture. Works on images
    ``(B, C, H, W)`` and volumes ``(B, C, D, H, W)``: the shift applies to every spatial axis, up to
    ``pad`` of that axis's side (4 px at 28-32 px); each axis of ``flip_axes`` (negative spatial
    axes: -1 is width, -2 height, -3 depth) is flipped for half of the images, independently.
    """

    pad: float = 0.125
    flip_axes: tuple[int, ...] = (-1,)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_uint8(x, (4, 5), "FlipCrop")
        spatial = x.dim() - 2
        if any(not -spatial <= a <= -1 for a in self.flip_axes):
            raise UserError(f"FlipCrop flip_axes {self.flip_axes} must be spatial axes, -1 to -{spatial}")
        n, sides = x.shape[0], x.shape[2:]
        pads = [max(1, round(self.pad * side)) if self.pad > 0 else 0 for side in sides]
        shifts = [torch.randint(-p, p + 1, (n,), generator=generator, device=x.device).tolist() for p in pads]
        out = torch.zeros_like(x)
        for i in range(n):
            dst, src = [slice(None)], [slice(None)]  # the channel axis, whole
            for side, s in zip(sides, (shift[i] for shift in shifts)):
                dst.append(slice(max(0, -s), side - max(0, s)))
                src.append(slice(max(0, s), side - max(0, -s)))
            out[i][tuple(dst)] = x[i][tuple(src)]
        for axis in self.flip_axes:
            chosen = torch.rand(n, generator=generator, device=x.device) < 0.5
            if bool(chosen.any()):
                out[chosen] = out[chosen].flip(axis)
        return out


@dataclass(frozen=True)
class Affine:
    """Random horizontal flip plus a small random rotation, shift and scaling of 2D images.

    One ``affine_grid`` + ``grid_sample`` for the whole batch (no torchvision needed), bilinear,
    zero fill, rounded back to uint8.
    """

    degrees: float = 15.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    flip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_uint8(x, (4,), "Affine")
        n, dev = x.shape[0], x.device
        angle = (torch.rand(n, generator=generator, device=dev) * 2 - 1) * math.radians(self.degrees)
        scale = self.scale[0] + torch.rand(n, generator=generator, device=dev) * (self.scale[1] - self.scale[0])
        shift = (torch.rand(n, 2, generator=generator, device=dev) * 2 - 1) * self.translate * 2  # grid units span 2
        sign = torch.ones(n, device=dev)
        if self.flip:
            sign = torch.where(torch.rand(n, generator=generator, device=dev) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos * sign, -sin, shift[:, 0]], 1), torch.stack([sin * sign, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return y.round_().clamp_(0, 255).to(torch.uint8)


#: Augmentations by the name a command line gives them (``train_hf.py --augment``).
AUGMENTATIONS: dict[str, type] = {"flip_crop": FlipCrop, "affine": Affine}


def by_name(name: str | None, spatial_dims: int = 2) -> FlipCrop | Affine | None:
    """The augmentation called ``name`` with its defaults (None for ``none``); volumes are flipped
    along every axis, since a scan has no preferred left and right."""
    if name in (None, "none"):
        return None
    if name not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {name!r}; choose one of none, {', '.join(AUGMENTATIONS)}")
    if spatial_dims == 3:
        if name != "flip_crop":
            raise UserError(f"augmentation {name!r} is for 2D images; volumes take flip_crop")
        return FlipCrop(flip_axes=(-1, -2, -3))
    return AUGMENTATIONS[name]()
