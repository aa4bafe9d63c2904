"""Deterministic 2D residual UNet: the discriminative baseline next to the diffusion denoisers.

It shares the denoisers' call signature ``forward(x_t, t, image)`` so that one model interface serves
every architecture, but it looks at the image only: ``x_t`` and ``t`` are ignored (and may be ``None``)
and the output is segmentation LOGITS, not predicted noise. The training code recognises architecture
``unet_baseline`` as discriminative and trains it with Dice + BCE on these logits, with no diffusion
process; sampling is a single forward pass followed by a sigmoid.

Layout (DynUNet-like): a residual block per level (the first at full resolution, the others entered
by a stride-2 conv), transposed-conv upsampling, skip concatenation and a residual block per decoder
level, and a 1x1 conv head. Normalisation is per-instance (GroupNorm with one group per channel,
statistics in float32), activation LeakyReLU(0.01).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from isles_diffseg.models.numerics import GroupNorm32
from isles_diffseg.models.registry import register_model

LEAKY_SLOPE = 0.01


def instance_norm(channels: int) -> nn.Module:
    """Per-sample, per-channel normalisation with affine parameters, bf16-safe."""
    return GroupNorm32(channels, channels)


class ResidualConvBlock(nn.Module):
    """conv3x3(stride) -> norm -> LeakyReLU -> conv3x3 -> norm, plus a (projected) shortcut, LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            instance_norm(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            instance_norm(out_channels),
        )
        self.shortcut = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                instance_norm(out_channels),
            )
            if in_channels != out_channels or stride != 1
            else nn.Identity()
        )
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class UpLevel(nn.Module):
    """Transposed-conv x2 upsampling, concatenation with the encoder skip, residual block."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False)
        self.block = ResidualConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.upsample(x), skip], dim=1))


@register_model("unet_baseline")
class UNetBaseline(nn.Module):
    """Residual 2D UNet returning logits ``(B, output_channels, H, W)`` from the image alone.

    Args:
        image_channels: channels of the input image (modalities x slices; set by the data config).
        output_channels: logit channels.
        filters: channels per level, finest first; ``len(filters) - 1`` stride-2 downsamplings.
        image_size: only validated (must be divisible by ``2 ** (len(filters) - 1)``); any input whose
            sides are divisible by that factor is accepted.
    """

    @staticmethod
    def size_multiple(filters: Sequence[int] = (32, 64, 128, 256)) -> int:
        """Image sizes must be multiples of this: the encoder halves the size between filter levels."""
        return 2 ** (len(filters) - 1)

    def __init__(
        self,
        image_channels: int = 2,
        output_channels: int = 1,
        filters: Sequence[int] = (32, 64, 128, 256),
        image_size: int | None = None,
    ):
        super().__init__()
        filters = list(filters)
        if not filters or any(not isinstance(f, int) or isinstance(f, bool) or f < 1 for f in filters):
            raise ValueError(
                f"UNetBaseline: filters must be a non-empty list of positive integers, got {filters!r}"
            )
        for name, value in (("image_channels", image_channels), ("output_channels", output_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetBaseline: {name} must be a positive integer, got {value!r}")
        self.input_multiple = multiple = self.size_multiple(filters)
        if image_size is not None and image_size % multiple:
            raise ValueError(
                f"UNetBaseline: image_size {image_size} is not divisible by 2**(len(filters)-1) = "
                f"{multiple} (filters={filters})"
            )
        self.image_channels = image_channels

        self.encoder = nn.ModuleList(
            ResidualConvBlock(c_in, c_out, stride=1 if level == 0 else 2)
            for level, (c_in, c_out) in enumerate(zip([image_channels, *filters[:-1]], filters, strict=True))
        )
        self.decoder = nn.ModuleList(
            UpLevel(c_in, c_out) for c_in, c_out in zip(filters[:0:-1], filters[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(filters[0], output_channels, 1)

    def forward(self, x_t: torch.Tensor | None, t: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
        """``x_t`` and ``t`` are accepted for interface compatibility and ignored."""
        del x_t, t
        if image.ndim != 4 or image.shape[1] != self.image_channels:
            raise ValueError(
                f"UNetBaseline: image must have shape (B, {self.image_channels}, H, W), got {tuple(image.shape)}"
            )
        if image.shape[-2] % self.input_multiple or image.shape[-1] % self.input_multiple:
            raise ValueError(
                f"UNetBaseline: image sides {tuple(image.shape[-2:])} must be divisible by {self.input_multiple}"
            )
        skips = []
        x = image
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()  # the deepest level is the decoder's input, not a skip
        for up_level in self.decoder:
            x = up_level(x, skips.pop())
        return self.head(x)
