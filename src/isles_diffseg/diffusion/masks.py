"""Mapping between lesion masks/probabilities in [0, 1] and the diffusion signal space [-1, 1]."""

from __future__ import annotations

import torch
from torch import Tensor


def mask_to_signal(mask01: Tensor) -> Tensor:
    """Map a (possibly soft) mask in [0, 1] to the signal space: 0 -> -1, 1 -> +1."""
    if not torch.is_floating_point(mask01):
        mask01 = mask01.float()
    if mask01.numel() and (bool(mask01.min() < 0) or bool(mask01.max() > 1)):
        raise ValueError(
            f"mask values must lie in [0, 1], got range [{mask01.min().item()}, {mask01.max().item()}]"
        )
    return mask01 * 2.0 - 1.0


def signal_to_probability(x: Tensor) -> Tensor:
    """Map a signal-space sample to a foreground probability in [0, 1], clipping overshoot."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
