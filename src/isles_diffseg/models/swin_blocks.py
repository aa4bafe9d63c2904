"""Swin Transformer building blocks on channel-last token grids ``(B, H, W, C)``.

Window attention with a learned relative position bias, shifted windows whose cyclic shift is
masked so that tokens brought together only by the wrap-around do not attend to each other,
patch merging (x1/2 resolution, x2 channels) and patch expanding (pixel shuffle, the inverse).
Written for this project because timm/torchvision are not available beside its torch build.
"""

from __future__ import annotations

import torch
from torch import nn

from isles_diffseg.models.numerics import LayerNorm32, safe_attention


def effective_window(grid: int, window: int) -> tuple[int, int]:
    """``(window, shift)`` used on a ``grid x grid`` token map.

    A grid no larger than the window is one window without shift (as in the Swin paper's code),
    which lets small test images through; otherwise the grid must tile into whole windows.
    """
    if grid <= window:
        return grid, 0
    if grid % window:
        raise ValueError(f"a {grid}x{grid} token grid does not tile into {window}x{window} windows")
    return window, window // 2


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C) -> (B, num_windows, window * window, C)``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_merge(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    b, _, _, c = windows.shape
    x = windows.reshape(b, height // window, width // window, window, window, c).transpose(2, 3)
    return x.reshape(b, height, width, c)


def relative_position_index(window: int) -> torch.Tensor:
    """``(N, N)`` index into a ``(2*window - 1)**2`` bias table for every query/key offset pair."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return offsets[0] * (2 * window - 1) + offsets[1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Boolean ``(num_windows, N, N)``: True where query and key may attend in a shifted block.

    After rolling the grid by ``-shift``, the last ``shift`` rows/columns hold tokens from the
    opposite border. Within a window, two tokens may attend only when both or neither come
    from the wrap-around, along each axis.
    """
    rows = torch.arange(height) >= height - shift
    cols = torch.arange(width) >= width - shift
    region = (rows[:, None].long() * 2 + cols[None, :].long())[None, :, :, None]
    region = window_partition(region, window)[..., 0]  # (1, num_windows, N)
    return region[0, :, :, None] == region[0, :, None, :]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a relative position bias per head."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide the embedding dimension {dim}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.projection = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``windows (B, nW, N, C)``; ``mask`` boolean ``(nW, N, N)``, True = may attend."""
        b, num_windows, n, c = windows.shape
        head_dim = c // self.num_heads
        qkv = self.qkv(windows).reshape(b, num_windows, n, 3, self.num_heads, head_dim)
        # Windows and heads share one attention "head" axis so that the (window, head) bias
        # broadcasts over the batch instead of being copied B times.
        qkv = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b, num_windows * self.num_heads, n, head_dim)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1)  # (heads, N, N)
        bias = bias.unsqueeze(0).expand(num_windows, -1, -1, -1)
        if mask is not None:
            bias = bias.masked_fill(~mask[:, None], float("-inf"))
        bias = bias.reshape(1, num_windows * self.num_heads, n, n).to(qkv.dtype)
        out = safe_attention(qkv[0], qkv[1], qkv[2], bias)
        out = (
            out.reshape(b, num_windows, self.num_heads, n, head_dim)
            .transpose(2, 3)
            .reshape(b, num_windows, n, c)
        )
        return self.projection(out)


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's whole residual branch with probability ``rate`` in training."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        survivors = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * survivors / keep


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP on a fixed ``grid x grid`` token map."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: int,
        window: int,
        shifted: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.grid = grid
        self.window, shift = effective_window(grid, window)
        self.shift = shift if shifted else 0
        self.norm1 = LayerNorm32(dim)
        self.attention = WindowAttention(dim, num_heads, self.window, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm32(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        mask = shifted_window_mask(grid, grid, self.window, self.shift) if self.shift else None
        self.register_buffer("attention_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        if (height, width) != (self.grid, self.grid):
            raise ValueError(f"block built for a {self.grid}x{self.grid} token grid got {height}x{width}")
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = self.attention(window_partition(h, self.window), self.attention_mask)
        h = window_merge(h, self.window, height, width)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Sequential):
    """``len(drop_paths)`` Swin blocks, every second one with shifted windows."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: int,
        window: int,
        drop_paths: list[float],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
    ):
        super().__init__(
            *(
                SwinBlock(dim, num_heads, grid, window, index % 2 == 1, mlp_ratio, qkv_bias, rate)
                for index, rate in enumerate(drop_paths)
            )
        )


class PatchMerging(nn.Module):
    """``(B, H, W, C) -> (B, H/2, W/2, 2C)``: concatenate each 2x2 neighbourhood, norm, project."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm32(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """``(B, H, W, C_in) -> (B, sH, sW, C_out)``: linear to ``s*s*C_out``, pixel shuffle, norm."""

    def __init__(self, in_dim: int, out_dim: int, scale: int = 2):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expansion = nn.Linear(in_dim, scale * scale * out_dim, bias=False)
        self.norm = LayerNorm32(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expansion(x).reshape(b, h, w, s, s, self.out_dim).transpose(2, 3)
        return self.norm(x.reshape(b, h * s, w * s, self.out_dim))
