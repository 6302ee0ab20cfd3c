"""Mixup (Zhang et al., ICLR 2018): train on convex combinations of image pairs and of their targets.

On a few hundred training images a network soon fits every one of them; mixing each image with
another of its batch, and its target in the same proportion, keeps the training loss informative
for longer and makes the scores between classes vary smoothly, which is what AUC ranks by.
"""

from __future__ import annotations

import math

import torch

from hfmed.errors import UserError


def checked(alpha: float) -> float:
    if not 0.0 < alpha < math.inf:  # NaN fails both
        raise UserError(f"--mixup_alpha must be a positive number (e.g. 0.2), got {alpha}")
    return alpha


def mix(pixels: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The batch mixed with a shuffled copy of itself, the partner of each row, and the original's weight.

    One weight per batch, drawn from Beta(alpha, alpha) as in the paper. The caller mixes the
    targets as the same weighted sum of the two rows' losses, which equals mixing the targets for
    cross-entropy and binary cross-entropy (both linear in the target). Draws come from torch's
    global generator, which the Trainer seeds with --seed.
    """
    concentration = torch.tensor(float(checked(alpha)))
    weight = float(torch.distributions.Beta(concentration, concentration).sample())
    partner = torch.randperm(pixels.shape[0]).to(pixels.device)
    mixed = pixels * weight + pixels[partner] * (1.0 - weight)
    return mixed, partner, weight
