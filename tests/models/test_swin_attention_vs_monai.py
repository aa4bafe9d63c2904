"""MONAI's Swin window attention (``monai.networks.nets.swin_unetr.WindowAttention``, the SwinUNETR one) as an
independent oracle for ours.

Ours is kept (``models/swin_blocks.py``): it goes through ``F.scaled_dot_product_attention`` (the fused,
bf16-safe kernel on a GPU) where MONAI multiplies and soft-maxes explicitly, and DiffSwinTr's blocks take a
timestep modulation that MONAI's Swin block has no place for. With the same weights the two must agree.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.swin_unetr import WindowAttention as MonaiWindowAttention

from isles_diffseg.models.swin_blocks import WindowAttention, shifted_window_mask


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_equals_monai_s_with_the_same_weights(shifted):
    torch.manual_seed(0)
    dim, heads, window, batch, grid = 32, 4, 4, 2, 8
    ours = WindowAttention(dim, heads, window).eval()
    theirs = MonaiWindowAttention(dim, heads, (window, window), qkv_bias=True).eval()
    with torch.no_grad():
        ours.bias_table.normal_()  # a bias large enough to matter (trunc_normal std 0.02 would hide a wrong index)
        theirs.qkv.weight.copy_(ours.qkv.weight)
        theirs.qkv.bias.copy_(ours.qkv.bias)
        theirs.proj.weight.copy_(ours.projection.weight)
        theirs.proj.bias.copy_(ours.projection.bias)
        theirs.relative_position_bias_table.copy_(ours.bias_table)
    n_windows, tokens = (grid // window) ** 2, window * window
    windows = torch.randn(batch, n_windows, tokens, dim)
    allowed = shifted_window_mask(grid, grid, window, window // 2) if shifted else None
    # Swin's (and MONAI's) additive mask: -100 where attention is not allowed; ours: a boolean, -inf there
    additive = None if allowed is None else torch.zeros(n_windows, tokens, tokens).masked_fill(~allowed, -100.0)
    with torch.no_grad():
        expected = theirs(windows.reshape(batch * n_windows, tokens, dim), additive)
        got = ours(windows, allowed)
    torch.testing.assert_close(got, expected.reshape(batch, n_windows, tokens, dim), atol=1e-5, rtol=1e-5)
