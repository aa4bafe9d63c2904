"""Convolutional, attention and resampling blocks of the MedSegDiff denoiser.

These follow the open-source MedSegDiff design (deepmancer's version, as used by the seed repository)
closely enough that parameter counts match it, but every normalisation and attention runs through the
float32-safe primitives of :mod:`isles_diffseg.models.numerics`, so the blocks stay finite under bf16.
All tensors are channels-first feature maps ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isles_diffseg.models.numerics import GroupNorm32, LayerNorm32, safe_attention

GROUP_NORM_GROUPS = 8


class ChannelLayerNorm(nn.Module):
    """LayerNorm across the channels of each pixel, statistics in float32.

    ``bias=False`` reproduces the gain-only norm of the reference design (prenorms of attention).
    """

    def __init__(self, channels: int, bias: bool = False):
        super().__init__()
        self.norm = LayerNorm32(channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    """3x3 conv -> GroupNorm -> optional FiLM-style ``(1 + scale), shift`` -> SiLU."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = GROUP_NORM_GROUPS):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = GroupNorm32(groups, out_channels)
        self.act = nn.SiLU()

    def forward(
        self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResnetBlock(nn.Module):
    """Two :class:`ConvNormAct` with a residual path, optionally conditioned on a time embedding.

    The time embedding (B, time_embedding_dim) sets a per-channel scale and shift after the first
    normalisation. Built without ``time_embedding_dim`` the block is unconditioned and ``t_emb`` is ignored.
    """

    def __init__(self, in_channels: int, out_channels: int, time_embedding_dim: int | None = None):
        super().__init__()
        if out_channels % GROUP_NORM_GROUPS:
            raise ValueError(
                f"ResnetBlock output channels ({out_channels}) must be divisible by the "
                f"{GROUP_NORM_GROUPS} GroupNorm groups"
            )
        self.time_projection = (
            nn.Sequential(nn.SiLU(), nn.Linear(time_embedding_dim, 2 * out_channels))
            if time_embedding_dim is not None
            else None
        )
        self.block1 = ConvNormAct(in_channels, out_channels)
        self.block2 = ConvNormAct(out_channels, out_channels)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        scale_shift = None
        if self.time_projection is not None and t_emb is not None:
            scale, shift = self.time_projection(t_emb)[:, :, None, None].chunk(2, dim=1)
            scale_shift = (scale, shift)
        h = self.block2(self.block1(x, scale_shift))
        return h + self.shortcut(x)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, heads*d, H, W) -> (B, heads, d, H*W)."""
    b, _, h, w = x.shape
    return x.reshape(b, heads, -1, h * w)


class LinearAttention(nn.Module):
    """Efficient (linear in pixels) attention: softmax over features for q, over pixels for k.

    Cost is O(N d^2) instead of O(N^2 d), which is why it is used on the high-resolution levels.
    The context product is computed in float32: sums over 64k pixels lose all precision in bf16.
    """

    def __init__(self, channels: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.scale = heads, head_dim**-0.5
        hidden = heads * head_dim
        self.prenorm = ChannelLayerNorm(channels)
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, channels, 1), ChannelLayerNorm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (_split_heads(part, self.heads) for part in self.to_qkv(self.prenorm(x)).chunk(3, dim=1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            q = q.float().softmax(dim=-2) * self.scale
            k = k.float().softmax(dim=-1)
            context = torch.einsum("bhdn,bhen->bhde", k, v.float())
            out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.to(x.dtype).reshape(b, -1, h, w))


class FullAttention(nn.Module):
    """Multi-head softmax self-attention over all pixels, through :func:`safe_attention`."""

    def __init__(self, channels: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        hidden = heads * head_dim
        self.prenorm = ChannelLayerNorm(channels)
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (
            _split_heads(part, self.heads).transpose(-1, -2)
            for part in self.to_qkv(self.prenorm(x)).chunk(3, dim=1)
        )
        out = safe_attention(q, k, v)  # (B, heads, N, d)
        return self.to_out(out.transpose(-1, -2).reshape(b, -1, h, w))


class Residual(nn.Module):
    """``x + fn(x)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class PixelUnshuffleDownsample(nn.Module):
    """Halve H and W losslessly (2x2 pixel-unshuffle into channels), then mix with a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(4 * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pixel_unshuffle(x, 2))


class NearestUpsample(nn.Module):
    """Double H and W by nearest-neighbour interpolation, then a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ConvFeedForward(nn.Module):
    """Pre-norm position-wise MLP as 1x1 convs: C -> mult*C -> GELU -> C."""

    def __init__(self, channels: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            ChannelLayerNorm(channels),
            nn.Conv2d(channels, mult * channels, 1),
            nn.GELU(),
            nn.Conv2d(mult * channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BottleneckTransformer(nn.Sequential):
    """``depth`` x [residual full attention, residual conv feed-forward] on a feature map."""

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int):
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [
                Residual(FullAttention(channels, heads, head_dim)),
                Residual(ConvFeedForward(channels)),
            ]
        super().__init__(*layers)
