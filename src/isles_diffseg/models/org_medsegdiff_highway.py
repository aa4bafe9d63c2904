"""The conditioning highway of the official MedSegDiff: an image-only nnU-Net-style encoder-decoder.

It plays two roles. Its finest decoder features are the "anchor" that the diffusion UNet adds to
its first feature map, and its 1x1 head gives calibration logits that the caller supervises
directly against the mask (BCE-with-logits). Differences from the official ``Generic_UNet`` port,
each fixing a defect of the earlier codebase: the number of poolings is an argument (it was fixed
at 5, which tied the model to 256 px), there is no dropout, every map computed is used, and the
logits leave the module unclamped.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from isles_diffseg.models.numerics import GroupNorm32


def highway_norm(channels: int) -> GroupNorm32:
    """GroupNorm with up to 8 groups.

    nnU-Net's BatchNorm would make sampling depend on running statistics and InstanceNorm
    degenerates on a 1-pixel bottleneck; groups of several channels avoid both.
    """
    return GroupNorm32(math.gcd(8, channels), channels)


class ConvNormAct(nn.Sequential):
    """3x3 convolution, GroupNorm, LeakyReLU(0.01): nnU-Net's basic unit."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            highway_norm(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


class HighwayUNet(nn.Module):
    """Image -> (finest decoder features ``(B, base_channels, H, W)``, logits ``(B, 1, H, W)``).

    ``depth`` strided-conv poolings; stage ``i`` has ``min(base_channels * 2**i, max_channels)``
    channels; the decoder upsamples with transposed convolutions and concatenates the skip.
    """

    def __init__(self, in_channels: int, base_channels: int = 32, depth: int = 5, max_channels: int = 480):
        super().__init__()
        if depth < 0:
            raise ValueError(f"highway depth must be >= 0, got {depth}")
        if base_channels < 1 or max_channels < base_channels:
            raise ValueError(
                f"highway needs 1 <= base_channels <= max_channels, got {base_channels} and {max_channels}"
            )
        self.depth = depth
        widths = [min(base_channels * 2**level, max_channels) for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(
                    in_channels if level == 0 else widths[level - 1], width, stride=1 if level == 0 else 2
                ),
                ConvNormAct(width, width),
            )
            for level, width in enumerate(widths)
        )
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(widths[level], widths[level - 1], kernel_size=2, stride=2)
            for level in range(depth, 0, -1)
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(2 * widths[level - 1], widths[level - 1]),
                ConvNormAct(widths[level - 1], widths[level - 1]),
            )
            for level in range(depth, 0, -1)
        )
        self.calibration_head = nn.Conv2d(widths[0], 1, kernel_size=1)
        self.feature_channels = widths[0]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        h = image
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        h = skips.pop()
        for upsample, stage in zip(self.upsamplers, self.decoder, strict=True):
            h = stage(torch.cat([upsample(h), skips.pop()], dim=1))
        return h, self.calibration_head(h)
