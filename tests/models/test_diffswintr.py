"""Specification of DiffSwinTr, its Swin blocks and its named variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import isles_diffseg.models.diffswintr as diffswintr
from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models.registry import build_model, count_parameters
from isles_diffseg.models.swin_blocks import (
    SwinBlock,
    effective_window,
    shifted_window_mask,
    window_merge,
    window_partition,
)

CONF_DIR = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {
    name: config
    for name, config in load_variant_group("model", CONF_DIR).items()
    if config["architecture"] == "diffswintr"
}
FULL_SIZE = ["diffswintr_s", "diffswintr_b", "diffswintr_l"]
TINY = "diffswintr_tiny_cpu"
# With image_channels=2. The seed's counts were 17,502,361 / 52,840,517 / 169,025,841; the
# differences are exactly the conditional encoder's GroupNorm affine parameters (its
# InstanceNorms had none).
PARAMETERS = {
    "diffswintr_s": 17_508_249,
    "diffswintr_b": 52_849_349,
    "diffswintr_l": 169_037_617,
    "diffswintr_tiny_cpu": 1_104_557,
}
# Narrow widths (divisible by every stage's head count) at 32 px: stage grids 8, 4, 2, 1, so
# every stage after the first runs on a grid smaller than its window.
SMALL = {
    "diffswintr_s": {"image_size": 32, "embed_dim": 16},
    "diffswintr_b": {"image_size": 32, "embed_dim": 24},
    "diffswintr_l": {"image_size": 32, "embed_dim": 16},
    "diffswintr_tiny_cpu": {},
}


def small_model(name: str, **overrides) -> diffswintr.DiffSwinTr:
    torch.manual_seed(0)
    return build_model(VARIANTS[name], **{**SMALL[name], **overrides})


def inputs(size: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 1, size, size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    image = torch.rand(batch, 2, size, size, generator=generator)
    return x_t, t, image


def wake_film(model: diffswintr.DiffSwinTr) -> diffswintr.DiffSwinTr:
    """Random FiLM weights, as after some training (they start at zero)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for film in [*model.encoder_film, *model.decoder_film]:
            weight = film.modulation[1].weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    return model


def test_every_variant_has_a_yaml_file():
    assert set(VARIANTS) == {*FULL_SIZE, TINY}


def test_every_variant_builds_from_yaml_at_its_configured_size(record_property):
    for name in [*FULL_SIZE, TINY]:
        model = build_model(VARIANTS[name])
        total = count_parameters(model)
        del model
        record_property(f"{name}_parameters", total)
        assert total == PARAMETERS[name], name


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_forward_and_backward_at_small_size(name):
    model = small_model(name).train()
    size = model.image_size
    x_t, t, image = inputs(size)
    out = model(x_t, t, image)
    assert out.shape == (2, 1, size, size)
    assert torch.isfinite(out).all()
    F.mse_loss(out, torch.randn_like(out)).backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)


def test_output_shape_at_64_px():
    model = small_model("diffswintr_s", image_size=64)
    assert model(*inputs(64, batch=3)).shape == (3, 1, 64, 64)


def test_film_starts_as_identity_then_makes_the_output_depend_on_t():
    model = small_model(TINY).eval()
    x_t, t, image = inputs(64)
    later = (t + 300) % 1000
    with torch.no_grad():
        assert torch.equal(model(x_t, t, image), model(x_t, later, image))
        wake_film(model)
        assert not torch.allclose(model(x_t, t, image), model(x_t, later, image), atol=1e-6)


def test_output_depends_on_the_image():
    model = small_model(TINY).eval()
    x_t, t, image = inputs(64)
    with torch.no_grad():
        assert not torch.allclose(model(x_t, t, image), model(x_t, t, image.flip(-2)), atol=1e-6)


def test_bf16_autocast_forward_with_shifted_windows_is_finite():
    model = wake_film(small_model(TINY))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*inputs(64))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize(("height", "width", "window"), [(8, 8, 4), (16, 16, 8), (8, 16, 4)])
def test_shifted_window_mask_allows_exactly_the_pairs_that_were_neighbours_before_the_shift(
    height, width, window
):
    shift = window // 2
    mask = shifted_window_mask(height, width, window, shift)
    assert mask.shape == ((height // window) * (width // window), window * window, window * window)

    # Original coordinates of the token at each position of the grid rolled by -shift.
    rows = (torch.arange(height)[:, None] + shift) % height
    cols = (torch.arange(width)[None, :] + shift) % width
    grid = torch.stack([rows.expand(height, width), cols.expand(height, width)], dim=-1)
    origins = window_partition(grid[None], window)[0]  # (windows, N, 2)
    distance = (origins[:, :, None, :] - origins[:, None, :, :]).abs()
    were_neighbours = (distance < window).all(dim=-1)

    assert torch.equal(mask, were_neighbours)
    assert mask[0].all()  # the top-left window has no wrapped-around tokens
    assert not mask.all()


def test_shifted_block_keeps_opposite_corners_apart():
    # After the cyclic shift, the grid's first and last tokens share the last window; without the
    # mask, changing the first would change the last.
    torch.manual_seed(0)
    block = SwinBlock(dim=8, num_heads=2, grid=8, window=4, shifted=True).eval()
    x = torch.randn(1, 8, 8, 8)
    perturbed = x.clone()
    perturbed[0, 0, 0] = torch.randn(8)
    with torch.no_grad():
        before, after = block(x), block(perturbed)
    assert torch.equal(before[0, 7, 7], after[0, 7, 7])
    assert not torch.allclose(before[0, 0, 1], after[0, 0, 1])


def test_windows_are_clamped_to_small_grids_without_shift():
    assert effective_window(16, 8) == (8, 4)
    assert effective_window(4, 8) == (4, 0)
    assert effective_window(8, 8) == (8, 0)
    block = SwinBlock(dim=8, num_heads=2, grid=2, window=8, shifted=True)
    assert (block.window, block.shift, block.attention_mask) == (2, 0, None)
    with pytest.raises(ValueError, match="does not tile"):
        effective_window(12, 8)


def test_window_partition_and_merge_are_inverse():
    x = torch.randn(2, 8, 16, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (2, 8, 16, 3)
    assert torch.equal(windows[0, 1], x[0, 0:4, 4:8].reshape(16, 3))
    assert torch.equal(window_merge(windows, 4, 8, 16), x)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 48}, "patch_size \\* 2\\*\\*3 = 32"),
        ({"image_size": 96, "window_size": 8}, "does not tile"),
        ({"num_heads": [3, 6, 12, 24]}, "heads do not divide"),
        ({"depths": [2, 2, 2]}, "one entry per stage"),
    ],
)
def test_impossible_configurations_raise_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_model("diffswintr_s", **overrides)


def test_inputs_of_another_size_raise_a_clear_value_error():
    model = small_model("diffswintr_s")
    with pytest.raises(ValueError, match="image_size=32"):
        model(*inputs(64))
