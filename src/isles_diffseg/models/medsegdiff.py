"""MedSegDiff denoiser: predicts the noise of a noisy lesion mask, conditioned on the CT perfusion image.

Design of the open-source MedSegDiff (deepmancer's version, the seed repository's ``medsegdiff``):

* two encoders with separate weights, one for the noisy mask ``x_t`` and one for the image, each
  starting from a 7x7 stem; per level two time-conditioned :class:`ResnetBlock` s, residual attention
  (linear on all but the last level, full softmax on the last) and a pixel-unshuffle downsample
  (a 3x3 conv on the last level, which keeps its resolution);
* per level a :class:`DynamicFusion` feeds the mask features, filtered by the :class:`FFParser`
  (a learnable Fourier-domain filter), into the image stream; the mask stream sees the image only at
  the bottleneck;
* a bottleneck summing both streams and running a small transformer;
* a UNet decoder over the mask stream's skips, a final ResnetBlock over the concatenated mask stem,
  and a 1x1 conv.

Deliberate differences from the seed code: the timestep embedding is truly sinusoidal (the seed's was
linear in ``t``), and FFT, attention and normalisation run in float32 so bf16 autocast stays finite.
Parameter counts are unchanged: the time MLP keeps the seed's input width (``first_conv_channels``).
"""

from __future__ import annotations

import torch
from torch import nn

from isles_diffseg.models.embeddings import TimestepEmbedding
from isles_diffseg.models.medsegdiff_blocks import (
    GROUP_NORM_GROUPS,
    BottleneckTransformer,
    ChannelLayerNorm,
    FullAttention,
    LinearAttention,
    NearestUpsample,
    PixelUnshuffleDownsample,
    Residual,
    ResnetBlock,
)
from isles_diffseg.models.registry import register_model


class FFParser(nn.Module):
    """Learnable real filter ``(C, S, S)`` multiplying each channel's full 2D Fourier spectrum.

    Initialised to ones (identity). The full ``fft2`` grid is kept rather than the half ``rfft2`` grid
    so that parameter counts equal the reference design's; the filter need not be Hermitian, so the
    imaginary part of the inverse transform is dropped, as in the reference. The transform always runs
    in float32 with autocast disabled, since torch.fft has no bf16 support.
    """

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.spectral_filter = nn.Parameter(torch.ones(channels, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != self.spectral_filter.shape:
            raise ValueError(
                f"FFParser expects feature maps of shape (B, {', '.join(map(str, self.spectral_filter.shape))}),"
                f" got {tuple(x.shape)}; the model only accepts inputs of its configured image_size"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.fft2(x.float()) * self.spectral_filter.float()
            filtered = torch.fft.ifft2(spectrum).real
        return filtered.to(x.dtype)


class DynamicFusion(nn.Module):
    """Fuse FF-parsed mask features into the image stream: ``block(LN(ff(x)) * LN(img) * LN(img))``."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.ff_parser = FFParser(channels, size)
        self.mask_norm = ChannelLayerNorm(channels, bias=True)
        self.image_norm = ChannelLayerNorm(channels, bias=True)
        self.block = ResnetBlock(channels, channels)

    def forward(self, mask_features: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        normed_mask = self.mask_norm(self.ff_parser(mask_features))
        normed_image = self.image_norm(image_features)
        return self.block(normed_mask * normed_image * normed_image)


class EncoderLevel(nn.Module):
    """Two ResnetBlocks and residual attention at one resolution, plus the step to the next level.

    ``features`` returns the maps after the first block and after attention (the two skips);
    ``resample`` is applied separately because the image stream is fused in between.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_embedding_dim: int,
        heads: int,
        head_dim: int,
        is_last: bool,
    ):
        super().__init__()
        self.block1 = ResnetBlock(in_channels, in_channels, time_embedding_dim)
        self.block2 = ResnetBlock(in_channels, in_channels, time_embedding_dim)
        attention = FullAttention if is_last else LinearAttention
        self.attention = Residual(attention(in_channels, heads, head_dim))
        self.resample = (
            nn.Conv2d(in_channels, out_channels, 3, padding=1)
            if is_last
            else PixelUnshuffleDownsample(in_channels, out_channels)
        )

    def features(self, x: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        after_block1 = self.block1(x, t_emb)
        return after_block1, self.attention(self.block2(after_block1, t_emb))


class DecoderLevel(nn.Module):
    """Mirror of :class:`EncoderLevel`: each ResnetBlock takes one skip concatenated to its input."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        time_embedding_dim: int,
        heads: int,
        head_dim: int,
        is_last: bool,
        uses_full_attention: bool,
    ):
        super().__init__()
        self.block1 = ResnetBlock(in_channels + skip_channels, in_channels, time_embedding_dim)
        self.block2 = ResnetBlock(in_channels + skip_channels, in_channels, time_embedding_dim)
        attention = FullAttention if uses_full_attention else LinearAttention
        self.attention = Residual(attention(in_channels, heads, head_dim))
        self.resample = (
            nn.Conv2d(in_channels, out_channels, 3, padding=1)
            if is_last
            else NearestUpsample(in_channels, out_channels)
        )

    def forward(
        self, x: torch.Tensor, skip_attention: torch.Tensor, skip_block1: torch.Tensor, t_emb: torch.Tensor
    ) -> torch.Tensor:
        x = self.block1(torch.cat([x, skip_attention], dim=1), t_emb)
        x = self.block2(torch.cat([x, skip_block1], dim=1), t_emb)
        return self.resample(self.attention(x))


class FusionBottleneck(nn.Module):
    """Sum of the (time-conditioned) mask and image streams, a transformer, and a last ResnetBlock."""

    def __init__(self, channels: int, time_embedding_dim: int, heads: int, head_dim: int, depth: int):
        super().__init__()
        self.mask_block = ResnetBlock(channels, channels, time_embedding_dim)
        self.image_block = ResnetBlock(channels, channels, time_embedding_dim)
        self.transformer = BottleneckTransformer(channels, heads, head_dim, depth)
        self.out_block = ResnetBlock(channels, channels, time_embedding_dim)

    def forward(self, mask: torch.Tensor, image: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        fused = self.mask_block(mask, t_emb) + self.image_block(image, t_emb)
        return self.out_block(self.transformer(fused), t_emb)


def _require_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"MedSegDiff: {name} must be a positive integer, got {value!r}")


INITIALISATIONS = ("zero_out", "default", "he")


def _he_init(module: nn.Module) -> None:
    """Kaiming-normal conv weights (LeakyReLU slope 0.01) and zero biases, as the reference design."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_model("medsegdiff")
class MedSegDiff(nn.Module):
    """MedSegDiff noise predictor ``forward(x_t, t, image) -> (B, output_channels, H, W)``.

    Args:
        image_size: side of the square inputs; FF-Parser filters are sized from it, so inputs must
            match it exactly and it must be divisible by ``2 ** (num_layers - 1)``.
        num_layers: encoder/decoder levels; channels per level follow ``c0 * [1, 1, 2, 4, 8, ...]``.
        first_conv_channels: ``c0``, a multiple of 8 (GroupNorm groups).
        time_embedding_dim: width of the timestep embedding fed to every ResnetBlock.
        att_heads, att_head_dim: heads and per-head width of every attention block.
        bottleneck_transformer_layers: number of [attention, feed-forward] pairs at the bottleneck (>= 0).
        image_channels: channels of the conditioning image (modalities x slices; set by the data config).
        mask_channels, output_channels: channels of ``x_t`` and of the prediction.
        init: ``zero_out`` (PyTorch's default init, output conv zeroed as in improved-diffusion: the
            first prediction is exactly 0, so the first loss is of order 1), ``default`` (PyTorch's
            default everywhere) or ``he`` (the reference design's Kaiming init with slope 0.01, which it
            never actually applied: through the residual sums its outputs start with a standard
            deviation of ~170 at 256 px and the first hundreds of steps only undo that).

    ``t`` holds original diffusion timesteps (B,) in [0, T); they are embedded sinusoidally.
    """

    @staticmethod
    def size_multiple(num_layers: int) -> int:
        """Image sizes must be multiples of this: the encoder halves the size num_layers - 1 times."""
        return 2 ** (num_layers - 1)

    def __init__(
        self,
        image_size: int,
        num_layers: int,
        first_conv_channels: int,
        time_embedding_dim: int,
        att_heads: int,
        att_head_dim: int,
        bottleneck_transformer_layers: int,
        image_channels: int = 2,
        mask_channels: int = 1,
        output_channels: int = 1,
        init: str = "zero_out",
    ):
        super().__init__()
        if init not in INITIALISATIONS:
            raise ValueError(f"MedSegDiff: init must be one of {INITIALISATIONS}, got {init!r}")
        _require_positive(
            image_size=image_size,
            num_layers=num_layers,
            first_conv_channels=first_conv_channels,
            time_embedding_dim=time_embedding_dim,
            att_heads=att_heads,
            att_head_dim=att_head_dim,
            image_channels=image_channels,
            mask_channels=mask_channels,
            output_channels=output_channels,
        )
        if not isinstance(bottleneck_transformer_layers, int) or bottleneck_transformer_layers < 0:
            raise ValueError(
                f"MedSegDiff: bottleneck_transformer_layers must be an integer >= 0, "
                f"got {bottleneck_transformer_layers!r}"
            )
        reduction = self.size_multiple(num_layers)
        if image_size % reduction:
            raise ValueError(
                f"MedSegDiff: image_size {image_size} is not divisible by 2**(num_layers-1) = {reduction} "
                f"(num_layers={num_layers})"
            )
        if first_conv_channels % GROUP_NORM_GROUPS:
            raise ValueError(
                f"MedSegDiff: first_conv_channels {first_conv_channels} must be a multiple of "
                f"{GROUP_NORM_GROUPS} (GroupNorm groups)"
            )
        self.image_size = image_size
        self.image_channels, self.mask_channels = image_channels, mask_channels

        c0 = first_conv_channels
        ladder = [c0] + [c0 * 2**level for level in range(num_layers)]
        level_channels = list(zip(ladder[:-1], ladder[1:], strict=True))
        level_sizes = [image_size // 2**level for level in range(num_layers)]
        last = num_layers - 1

        self.time_embedding = TimestepEmbedding(time_embedding_dim, frequency_dim=c0)
        self.mask_stem = nn.Conv2d(mask_channels, c0, 7, padding=3)
        self.image_stem = nn.Conv2d(image_channels, c0, 7, padding=3)

        def encoder() -> nn.ModuleList:
            return nn.ModuleList(
                EncoderLevel(c_in, c_out, time_embedding_dim, att_heads, att_head_dim, level == last)
                for level, (c_in, c_out) in enumerate(level_channels)
            )

        self.mask_encoder = encoder()
        self.image_encoder = encoder()
        self.fusions = nn.ModuleList(
            DynamicFusion(c_in, size) for (c_in, _), size in zip(level_channels, level_sizes, strict=True)
        )
        self.bottleneck = FusionBottleneck(
            ladder[-1], time_embedding_dim, att_heads, att_head_dim, bottleneck_transformer_layers
        )
        # Decoder level i works at encoder level (last - i): input c_out, skips c_in, output c_in.
        self.decoder = nn.ModuleList(
            DecoderLevel(
                in_channels=c_out,
                skip_channels=c_in,
                out_channels=c_in,
                time_embedding_dim=time_embedding_dim,
                heads=att_heads,
                head_dim=att_head_dim,
                is_last=level == 0,
                uses_full_attention=level == last,
            )
            for level, (c_in, c_out) in reversed(list(enumerate(level_channels)))
        )
        self.final_block = ResnetBlock(2 * c0, c0, time_embedding_dim)
        self.final_conv = nn.Conv2d(c0, output_channels, 1)
        if init == "he":
            self.apply(_he_init)
        elif init == "zero_out":
            nn.init.zeros_(self.final_conv.weight)
            nn.init.zeros_(self.final_conv.bias)

    def _check_inputs(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> None:
        expected_hw = (self.image_size, self.image_size)
        for name, tensor, channels in (
            ("x_t", x_t, self.mask_channels),
            ("image", image, self.image_channels),
        ):
            if tensor.ndim != 4 or tensor.shape[1] != channels or tuple(tensor.shape[-2:]) != expected_hw:
                raise ValueError(
                    f"MedSegDiff: {name} must have shape (B, {channels}, {self.image_size}, {self.image_size}), "
                    f"got {tuple(tensor.shape)}"
                )
        if t.shape != (x_t.shape[0],) or image.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"MedSegDiff: batch sizes disagree: x_t {tuple(x_t.shape)}, t {tuple(t.shape)}, "
                f"image {tuple(image.shape)}"
            )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        self._check_inputs(x_t, t, image)
        t_emb = self.time_embedding(t)
        mask = self.mask_stem(x_t)
        mask_stem_out = mask
        img = self.image_stem(image)

        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        for mask_level, image_level, fusion in zip(
            self.mask_encoder, self.image_encoder, self.fusions, strict=True
        ):
            mask_block1, mask = mask_level.features(mask, t_emb)
            _, img = image_level.features(img, t_emb)
            img = fusion(mask, img)
            skips.append((mask_block1, mask))
            mask = mask_level.resample(mask)
            img = image_level.resample(img)

        x = self.bottleneck(mask, img, t_emb)
        for decoder_level, (skip_block1, skip_attention) in zip(self.decoder, reversed(skips), strict=True):
            x = decoder_level(x, skip_attention, skip_block1, t_emb)

        x = self.final_block(torch.cat([x, mask_stem_out], dim=1), t_emb)
        return self.final_conv(x)
