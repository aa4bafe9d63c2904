"""The official MedSegDiff denoiser (KidsWithTokens/MedSegDiff ``UNetModel_newpreview``), rewritten.

A guided-diffusion UNet over ``concat[image, x_t]``: FiLM (scale-shift norm) ResBlocks, attention at
chosen downsample rates, a ResBlock-Attention-ResBlock middle and a zero-initialised output conv.
The conditioning highway (:mod:`isles_diffseg.models.org_medsegdiff_highway`) segments the image on
its own; its finest decoder features are projected and added to the UNet's first feature map and
its logits are returned as ``calibration_logits``.

Against the earlier port: the anchor is not detached, so the diffusion loss trains the highway too;
the highway depth follows the configuration instead of a hard-coded 5; nothing random is built in
``forward``; dropout defaults to 0; any image size the depth allows works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from isles_diffseg.models.embeddings import TimestepEmbedding
from isles_diffseg.models.numerics import GroupNorm32, safe_attention
from isles_diffseg.models.org_medsegdiff_highway import HighwayUNet
from isles_diffseg.models.registry import register_model


def unet_norm(channels: int) -> GroupNorm32:
    """guided-diffusion's 32-group norm, with fewer groups when 32 does not divide ``channels``."""
    return GroupNorm32(math.gcd(32, channels), channels)


def zero_initialised(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so that its residual branch starts as the identity."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResBlock(nn.Module):
    """Residual block whose second norm is modulated by the timestep: ``norm(h) * (1 + scale) + shift``."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(
            unet_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.embedding_projection = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, 2 * out_channels))
        self.out_norm = unet_norm(out_channels)
        self.out_layers = nn.Sequential(
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_initialised(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.embedding_projection(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, residual, zero-initialised output."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide the {channels} channels it attends over")
        self.num_heads = num_heads
        self.norm = unet_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.projection = zero_initialised(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)
        attended = safe_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.projection(attended)


class Downsample(nn.Conv2d):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """Sequential that hands the timestep embedding to the ResBlocks among its layers."""

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, embedding) if isinstance(layer, ResBlock) else layer(x)
        return x


@register_model("org_medsegdiff")
class OrgMedSegDiff(nn.Module):
    """Official-design MedSegDiff: ``forward(x_t, t, image)``.

    Returns ``{"output": (B, output_channels, H, W), "calibration_logits": (B, 1, H, W)}`` with the
    highway, or the output tensor alone when ``use_highway`` is false.

    ``channel_mult`` has one entry per resolution level, so the UNet downsamples
    ``len(channel_mult) - 1`` times; ``attention_downsample_rates`` lists the downsample factors
    (1, 2, 4, ...) at which ResBlocks are followed by self-attention. ``highway_depth`` defaults to
    the UNet's number of downsamplings. H and W must be divisible by 2 to the larger of the two depths.
    """

    @staticmethod
    def size_multiple(channel_mult: Sequence[int] = (1, 2, 4, 8), use_highway: bool = True,
                      highway_depth: int | None = None) -> int:
        """Image sizes must be multiples of this: the UNet and the highway each halve the size per level."""
        unet_depth = len(channel_mult) - 1
        highway_depth = unet_depth if highway_depth is None else highway_depth
        return 2 ** max(unet_depth, highway_depth if use_highway else 0)

    def __init__(
        self,
        image_size: int,
        image_channels: int,
        mask_channels: int = 1,
        output_channels: int = 1,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        attention_downsample_rates: Sequence[int] = (16, 32),
        num_heads: int = 4,
        dropout: float = 0.0,
        use_highway: bool = True,
        highway_channels: int = 32,
        highway_max_channels: int = 480,
        highway_depth: int | None = None,
    ):
        super().__init__()
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive ints, got {channel_mult}")
        if min(image_channels, mask_channels, output_channels, model_channels, num_res_blocks) < 1:
            raise ValueError("image/mask/output/model channels and num_res_blocks must all be >= 1")
        unet_depth = len(channel_mult) - 1
        highway_depth = unet_depth if highway_depth is None else highway_depth
        self.spatial_divisor = self.size_multiple(channel_mult, use_highway, highway_depth)
        if image_size < 1 or image_size % self.spatial_divisor:
            raise ValueError(
                f"image_size={image_size} is not a positive multiple of {self.spatial_divisor}: "
                f"channel_mult {list(channel_mult)} downsamples {unet_depth} times"
                + (f" and the highway pools {highway_depth} times" if use_highway else "")
            )
        self.image_size = image_size
        self.image_channels = image_channels
        self.mask_channels = mask_channels

        embedding_dim = 4 * model_channels
        self.time_embedding = TimestepEmbedding(embedding_dim, frequency_dim=model_channels)
        self.input_conv = nn.Conv2d(image_channels + mask_channels, model_channels, 3, padding=1)

        def stage(in_ch: int, out_ch: int, rate: int) -> list[nn.Module]:
            layers: list[nn.Module] = [ResBlock(in_ch, out_ch, embedding_dim, dropout)]
            if rate in attention_downsample_rates:
                layers.append(SpatialSelfAttention(out_ch, num_heads))
            return layers

        self.encoder = nn.ModuleList()
        skip_channels = [model_channels]
        channels, rate = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.encoder.append(TimestepSequential(*stage(channels, mult * model_channels, rate)))
                channels = mult * model_channels
                skip_channels.append(channels)
            if level < unet_depth:
                self.encoder.append(TimestepSequential(Downsample(channels)))
                skip_channels.append(channels)
                rate *= 2

        self.middle = TimestepSequential(
            ResBlock(channels, channels, embedding_dim, dropout),
            SpatialSelfAttention(channels, num_heads),
            ResBlock(channels, channels, embedding_dim, dropout),
        )

        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for block in range(num_res_blocks + 1):
                layers = stage(channels + skip_channels.pop(), mult * model_channels, rate)
                channels = mult * model_channels
                if level > 0 and block == num_res_blocks:
                    layers.append(Upsample(channels))
                    rate //= 2
                self.decoder.append(TimestepSequential(*layers))

        self.output = nn.Sequential(
            unet_norm(channels),
            nn.SiLU(),
            zero_initialised(nn.Conv2d(channels, output_channels, 3, padding=1)),
        )

        self.highway: HighwayUNet | None = None
        self.anchor_projection: nn.Conv2d | None = None
        if use_highway:
            self.highway = HighwayUNet(image_channels, highway_channels, highway_depth, highway_max_channels)
            self.anchor_projection = nn.Conv2d(self.highway.feature_channels, model_channels, 1)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        self._check_inputs(x_t, t, image)
        embedding = self.time_embedding(t)
        h = self.input_conv(torch.cat([image, x_t], dim=1))
        calibration_logits = None
        if self.highway is not None and self.anchor_projection is not None:
            anchor, calibration_logits = self.highway(image)
            h = h + self.anchor_projection(anchor)

        skips = [h]
        for block in self.encoder:
            h = block(h, embedding)
            skips.append(h)
        h = self.middle(h, embedding)
        for block in self.decoder:
            h = block(torch.cat([h, skips.pop()], dim=1), embedding)
        output = self.output(h)

        if calibration_logits is None:
            return output
        return {"output": output, "calibration_logits": calibration_logits}

    def _check_inputs(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> None:
        if (
            x_t.ndim != 4
            or image.ndim != 4
            or x_t.shape[0] != image.shape[0]
            or x_t.shape[2:] != image.shape[2:]
        ):
            raise ValueError(
                f"x_t and image must be (B, C, H, W) with equal B, H, W; got {tuple(x_t.shape)} and {tuple(image.shape)}"
            )
        if x_t.shape[1] != self.mask_channels or image.shape[1] != self.image_channels:
            raise ValueError(
                f"expected {self.mask_channels} mask and {self.image_channels} image channels, "
                f"got {x_t.shape[1]} and {image.shape[1]}"
            )
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must have shape ({x_t.shape[0]},), got {tuple(t.shape)}")
        height, width = x_t.shape[2:]
        if height % self.spatial_divisor or width % self.spatial_divisor:
            raise ValueError(f"H and W must be multiples of {self.spatial_divisor}, got {height}x{width}")
