"""DiffSwinTr: a Swin-Transformer U-shaped denoiser with an image-only conditional encoder.

``concat[image, x_t]`` is cut into ``patch_size`` patches and passed through Swin stages at dims
C, 2C, 4C, 8C (patch merging in between). After each encoder stage the conditional encoder module
(CEM, a CNN that sees only the image) adds its map at the same resolution, then FiLM applies the
timestep: ``x * (1 + scale) + shift``. The decoder mirrors the encoder with patch expanding,
additive skips, Swin stages and FiLM; a final ``patch_size`` expansion and a linear layer give the
output. The FiLM layers start at zero, so training starts from the unconditioned network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from isles_diffseg.models.embeddings import TimestepEmbedding
from isles_diffseg.models.numerics import GroupNorm32, LayerNorm32
from isles_diffseg.models.registry import register_model
from isles_diffseg.models.swin_blocks import PatchExpand, PatchMerging, SwinStage


def _conv_norm_act(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    # GroupNorm instead of the original InstanceNorm: the deepest map is 1x1 at small image
    # sizes, where instance statistics are undefined.
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2 if stride == 1 else 0
        ),
        GroupNorm32(math.gcd(8, out_channels), out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


class ConditionalEncoder(nn.Module):
    """CEM: image ``(B, C_img, H, W)`` -> maps with ``embed_dim * 2**i`` channels at ``H / (patch * 2**i)``."""

    def __init__(self, image_channels: int, embed_dim: int, num_stages: int, patch_size: int):
        super().__init__()
        self.stem = _conv_norm_act(image_channels, embed_dim, kernel=patch_size, stride=patch_size)
        dims = [embed_dim * 2**stage for stage in range(num_stages)]
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_norm_act(dims[max(stage - 1, 0)], dim), _conv_norm_act(dim, dim))
            for stage, dim in enumerate(dims)
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(image)
        maps = []
        for index, stage in enumerate(self.stages):
            h = stage(self.pool(h) if index else h)
            maps.append(h)
        return maps


class TimeFiLM(nn.Module):
    """``x * (1 + scale) + shift`` on channel-last tokens, scale/shift from the time embedding.

    Zero-initialised so that it starts as the identity.
    """

    def __init__(self, time_dim: int, dim: int):
        super().__init__()
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(time_embedding)[:, None, None, :].chunk(2, dim=-1)
        return x * (1 + scale) + shift


@register_model("diffswintr")
class DiffSwinTr(nn.Module):
    """Swin U-shaped denoiser: ``forward(x_t, t, image) -> (B, output_channels, H, W)``.

    ``image_size`` must be divisible by ``patch_size * 2**(len(depths) - 1)``; stages whose token
    grid is smaller than ``window_size`` use one unshifted window covering the grid. Decoder stage
    ``i`` has ``depths[i]`` blocks (mirrored encoder) without stochastic depth.
    """

    @staticmethod
    def size_multiple(depths: Sequence[int] = (2, 2, 2, 2), patch_size: int = 4) -> int:
        """Image sizes must be multiples of this: patch embedding, then a merge between stages."""
        return patch_size * 2 ** (len(depths) - 1)

    def __init__(
        self,
        image_size: int,
        image_channels: int,
        mask_channels: int = 1,
        output_channels: int = 1,
        embed_dim: int = 64,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        window_size: int = 8,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        time_embed_dim: int = 256,
        time_frequency_dim: int = 256,
        use_conditional_encoder: bool = True,
    ):
        super().__init__()
        num_stages = len(depths)
        if num_stages < 1 or len(num_heads) != num_stages:
            raise ValueError(
                f"depths and num_heads need one entry per stage, got {list(depths)} and {list(num_heads)}"
            )
        if min(patch_size, window_size, embed_dim) < 1:
            raise ValueError("patch_size, window_size and embed_dim must be >= 1")
        divisor = self.size_multiple(depths, patch_size)
        if image_size < 1 or image_size % divisor:
            raise ValueError(
                f"image_size={image_size} is not a positive multiple of patch_size * 2**{num_stages - 1} = {divisor}"
            )
        for level, heads in enumerate(num_heads):
            if (embed_dim * 2**level) % heads:
                raise ValueError(f"stage {level}: {heads} heads do not divide dim {embed_dim * 2**level}")
        self.image_size, self.patch_size = image_size, patch_size
        self.image_channels, self.mask_channels = image_channels, mask_channels

        dims = [embed_dim * 2**stage for stage in range(num_stages)]
        grids = [image_size // patch_size // 2**stage for stage in range(num_stages)]
        # Stochastic depth grows linearly over all encoder blocks, as in Swin.
        rates = torch.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        encoder_rates = [rates[sum(depths[:stage]) : sum(depths[: stage + 1])] for stage in range(num_stages)]

        self.time_embedding = TimestepEmbedding(time_embed_dim, frequency_dim=time_frequency_dim)
        self.patch_embedding = nn.Conv2d(
            image_channels + mask_channels, embed_dim, patch_size, stride=patch_size
        )
        self.patch_norm = LayerNorm32(embed_dim)
        self.conditional_encoder = (
            ConditionalEncoder(image_channels, embed_dim, num_stages, patch_size)
            if use_conditional_encoder
            else None
        )

        def stage(index: int, drop_paths: list[float]) -> SwinStage:
            return SwinStage(
                dims[index], num_heads[index], grids[index], window_size, drop_paths, mlp_ratio, qkv_bias
            )

        self.merges = nn.ModuleList(PatchMerging(dims[index]) for index in range(num_stages - 1))
        self.encoder = nn.ModuleList(stage(index, encoder_rates[index]) for index in range(num_stages))
        self.encoder_film = nn.ModuleList(TimeFiLM(time_embed_dim, dim) for dim in dims)

        decoder_levels = list(range(num_stages - 2, -1, -1))
        self.expands = nn.ModuleList(PatchExpand(dims[level + 1], dims[level]) for level in decoder_levels)
        self.decoder = nn.ModuleList(stage(level, [0.0] * depths[level]) for level in decoder_levels)
        self.decoder_film = nn.ModuleList(TimeFiLM(time_embed_dim, dims[level]) for level in decoder_levels)

        self.final_expand = PatchExpand(embed_dim, embed_dim, scale=patch_size)
        self.head = nn.Linear(embed_dim, output_channels)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="leaky_relu", a=0.2)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for film in [*self.encoder_film, *self.decoder_film]:
            nn.init.zeros_(film.modulation[1].weight)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        self._check_inputs(x_t, t, image)
        time_embedding = self.time_embedding(t)
        x = self.patch_norm(self.patch_embedding(torch.cat([image, x_t], dim=1)).permute(0, 2, 3, 1))
        conditions = self.conditional_encoder(image) if self.conditional_encoder is not None else None

        skips = []
        for index, (stage, film) in enumerate(zip(self.encoder, self.encoder_film, strict=True)):
            if index:
                x = self.merges[index - 1](x)
            x = stage(x)
            if conditions is not None:
                x = x + conditions[index].permute(0, 2, 3, 1)
            x = film(x, time_embedding)
            skips.append(x)
        skips.pop()
        for expand, stage, film in zip(self.expands, self.decoder, self.decoder_film, strict=True):
            x = film(stage(expand(x) + skips.pop()), time_embedding)
        return self.head(self.final_expand(x)).permute(0, 3, 1, 2)

    def _check_inputs(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> None:
        expected_x = (x_t.shape[0], self.mask_channels, self.image_size, self.image_size)
        expected_image = (x_t.shape[0], self.image_channels, self.image_size, self.image_size)
        if tuple(x_t.shape) != expected_x or tuple(image.shape) != expected_image:
            raise ValueError(
                f"expected x_t {expected_x} and image {expected_image} (the model was built for "
                f"image_size={self.image_size}), got {tuple(x_t.shape)} and {tuple(image.shape)}"
            )
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must have shape ({x_t.shape[0]},), got {tuple(t.shape)}")
