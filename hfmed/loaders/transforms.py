"""From a uint8 batch at the stored size to what a model takes: resize, augment, RGB, normalise.

One function for both places it can run: in the loader's workers on the CPU, or on the
accelerator after a uint8 batch has crossed the bus (a quarter of the bytes of float32, and the
resize and normalisation cost nothing next to a forward pass there). Working on whole batches
keeps it to a handful of tensor operations however many images there are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from hfmed.errors import UserError

Augment = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BatchTransform:
    """``uint8 (B, C, *spatial)`` at the stored size -> the batch a model takes.

    - ``size``: output spatial size (``(H, W)`` or ``(D, H, W)``), or None for the stored size.
      Bilinear (trilinear for volumes), antialiased when shrinking, like ``PIL.Image.resize``.
    - ``augment``: a callable on the uint8 batch at the output size, returning a uint8 batch of
      the same size; it runs where the transform runs (workers, or the accelerator).
    - ``rgb``: repeat a single channel three times (for models pretrained on RGB).
    - ``dtype``: ``torch.uint8`` returns pixels as they are; a float dtype returns
      ``(x / 255 - mean) / std`` per channel (``x / 255`` without ``mean``/``std``, as ``ToTensor``).
    """

    size: tuple[int, ...] | None = None
    rgb: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dtype: torch.dtype = torch.float32
    augment: Augment | None = None

    def check(self, channels: int, spatial_dims: int) -> None:
        """Fail early, in one line, on options that do not fit the data."""
        if self.size is not None and len(self.size) != spatial_dims:
            raise UserError(f"image_size {self.size} has {len(self.size)} sides; these examples have {spatial_dims}")
        if self.rgb and spatial_dims == 3:
            raise UserError("rgb=True applies to 2D images; volumes have one channel")
        out_channels = 3 if self.rgb and channels == 1 else channels
        if self.dtype == torch.uint8:
            if self.mean is not None or self.std is not None:
                raise UserError("mean/std need a float dtype; uint8 batches are not normalised")
        elif not self.dtype.is_floating_point:
            raise UserError(f"dtype {self.dtype} is neither torch.uint8 nor a float type")
        if (self.mean is None) != (self.std is None):
            raise UserError("give both mean and std, or neither")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, out_channels):
                raise UserError(f"{name} has {len(values)} values; the batches have {out_channels} channel(s)")
        if self.std is not None and any(s == 0 for s in self.std):
            raise UserError("std must not contain 0")

    def split(self) -> tuple[BatchTransform, BatchTransform | None]:
        """(pixel stage, finishing stage): resize and augment on uint8, then RGB, dtype and statistics.

        The loader runs the first in its DataLoader workers and the second in the consuming
        process, so batches cross between processes as uint8: a float32 batch is four times the
        shared memory, and fresh shared memory costs a page fault per 4 KiB (no huge pages for
        it), which at 224 px cost more than decoding. None when there is nothing to finish.
        """
        if self.dtype == torch.uint8:
            return self, None
        return replace(self, rgb=False, mean=None, std=None, dtype=torch.uint8), BatchTransform(
            rgb=self.rgb, mean=self.mean, std=self.std, dtype=self.dtype
        )

    @property
    def identity(self) -> bool:
        return self.size is None and not self.rgb and self.dtype == torch.uint8 and self.augment is None

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(self.size)
        if tuple(x.shape[2:]) == size:
            return x
        shrink = any(o < i for o, i in zip(size, x.shape[2:]))
        if x.dim() == 5:
            y = F.interpolate(x.float(), size=size, mode="trilinear", align_corners=False)
        elif x.device.type == "cpu":  # uint8 in, uint8 out: the CPU kernel has a fast path for it
            return F.interpolate(x, size=size, mode="bilinear", antialias=shrink, align_corners=False)
        else:
            y = F.interpolate(x.float(), size=size, mode="bilinear", antialias=shrink, align_corners=False)
        return y.round_().clamp_(0, 255).to(torch.uint8)

    def __call__(
        self, x: torch.Tensor, alloc: Callable[..., torch.Tensor] | None = None, *, keep_input: bool = False
    ) -> torch.Tensor:
        """Apply to ``x``; ``alloc(shape, dtype)`` supplies the output tensor (e.g. in shared memory).

        ``keep_input=True`` promises a result that shares no memory with ``x`` (the caller reuses it).
        """
        if self.size is not None:
            x = self._resize(x)
        if self.augment is not None:
            x = self.augment(x)
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
                raise TypeError("the augment callable must return a uint8 tensor")
        if self.rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        shape = tuple(x.shape)
        if self.dtype == torch.uint8:
            if x.is_contiguous() and alloc is None and not keep_input:
                return x
            out = alloc(shape, torch.uint8) if alloc else torch.empty(shape, dtype=torch.uint8, device=x.device)
            return out.copy_(x)
        mean, std = self.mean or (0.0,), self.std or (1.0,)
        n = max(len(mean), len(std))
        mean, std = (mean * n if len(mean) == 1 else mean), (std * n if len(std) == 1 else std)
        # (x/255 - m)/s = x*a + b. uint8 -> float conversion first, then in-place float arithmetic:
        # the mixed-dtype kernels are several times slower than three vectorised passes.
        a = [1.0 / (255.0 * s) for s in std]
        b = [-m / s for m, s in zip(mean, std)]
        out = alloc(shape, self.dtype) if alloc else torch.empty(shape, dtype=self.dtype, device=x.device)
        view = (1, -1) + (1,) * (x.dim() - 2)
        scale = a[0] if len(set(a)) == 1 else torch.tensor(a, dtype=torch.float32, device=x.device).view(view)
        shift = (
            (b[0] if len(set(b)) == 1 else torch.tensor(b, dtype=torch.float32, device=x.device).view(view))
            if any(b)
            else None
        )
        if x.device.type != "cpu":
            _affine(x, out, scale, shift)
            return out
        # On the CPU the passes are memory-bound: a few images at a time, so that each pass finds
        # the previous one's output still in cache (about 20% faster at 224 px than whole batches).
        step = max(1, CPU_CHUNK_BYTES // max(1, 4 * math.prod(shape[1:])))
        work = (
            None if self.dtype == torch.float32 else torch.empty((min(step, shape[0]), *shape[1:]), dtype=torch.float32)
        )
        for start in range(0, shape[0], step):
            part = out[start : start + step]
            if work is None:
                _affine(x[start : start + step], part, scale, shift)
            else:
                w = work[: part.shape[0]]
                _affine(x[start : start + step], w, scale, shift)
                part.copy_(w)
        return out


CPU_CHUNK_BYTES = 1 << 20  # float bytes converted per step on the CPU


def _affine(
    x: torch.Tensor, out: torch.Tensor, scale: float | torch.Tensor, shift: float | torch.Tensor | None
) -> None:
    """``out = x * scale + shift`` in floating-point ``out``: the conversion, then in-place arithmetic
    (the mixed-dtype kernels are several times slower than separate vectorised passes)."""
    out.copy_(x)
    out.mul_(scale)
    if shift is not None:
        out.add_(shift)


def as_size(image_size: int | Sequence[int] | None, spatial_dims: int) -> tuple[int, ...] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        if image_size <= 0:
            raise UserError(f"image_size must be positive, got {image_size}")
        return (image_size,) * spatial_dims
    size = tuple(int(s) for s in image_size)
    if any(s <= 0 for s in size):
        raise UserError(f"image_size must be positive, got {size}")
    return size
