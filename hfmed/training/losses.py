"""Losses beside the ones transformers' models compute themselves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch.nn.functional as F

if TYPE_CHECKING:
    import torch


def ordinal_emd_loss(
    outputs: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
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
