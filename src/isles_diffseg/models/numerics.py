"""bf16/fp16-safe building blocks: softmax attention and normalisation computed in float32.

The earlier codebase's 8x8-head, 256-dim MedSegDiff produced NaNs under bf16. Attention logits and
normalisation statistics are where low precision overflows or loses all mantissa, so these blocks
upcast exactly there and cast back to the input dtype afterwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are computed in float32 whatever the autocast dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm over the last dimension, statistics in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


def safe_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention (B, heads, N, d) through ``F.scaled_dot_product_attention``.

    Inputs in half precision go to the fused kernel, which accumulates the softmax in float32 on
    CUDA; q is pre-scaled so the logits cannot overflow fp16 before the kernel's own scaling.
    """
    scale = q.shape[-1] ** -0.5
    out = F.scaled_dot_product_attention(q * scale, k, v, attn_mask=mask, scale=1.0)
    return out
