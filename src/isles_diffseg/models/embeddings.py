"""Timestep embeddings shared by the denoisers."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of integer (or real) timesteps, shape (B, dim).

    Frequencies span 1 .. 1/max_period geometrically, so nearby and distant timesteps are both
    distinguishable (the earlier codebase scaled one constant vector by t, which is linear in t).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features followed by an MLP: ``t (B,) -> (B, out_dim)``."""

    def __init__(self, out_dim: int, frequency_dim: int | None = None):
        super().__init__()
        self.frequency_dim = frequency_dim or out_dim
        self.mlp = nn.Sequential(
            nn.Linear(self.frequency_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.frequency_dim))
