"""Specification of the deterministic UNet baseline (image in, logits out)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import isles_diffseg.models.unet_baseline as unet_baseline
from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models.registry import build_model, count_parameters

CONF_DIR = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {
    name: config
    for name, config in load_variant_group("model", CONF_DIR).items()
    if config["architecture"] == "unet_baseline"
}
TINY_VARIANT = "unet_baseline_tiny_cpu"


def tiny_model(**overrides) -> unet_baseline.UNetBaseline:
    torch.manual_seed(0)
    return build_model(VARIANTS[TINY_VARIANT], **overrides)


def test_both_variants_exist():
    assert set(VARIANTS) == {"unet_baseline", TINY_VARIANT}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_runs_forward_and_backward_with_finite_logits(name):
    torch.manual_seed(0)
    model = build_model(VARIANTS[name], image_channels=3, image_size=32)
    image = torch.randn(2, 3, 32, 32)
    logits = model(None, None, image)
    assert logits.shape == (2, 1, 32, 32)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_full_variant_parameter_count():
    count = count_parameters(build_model(VARIANTS["unet_baseline"], image_channels=2))
    print(f"unet_baseline: {count:,} parameters")
    # Same order of magnitude as the seed's 2D DynUNet with the same filters (1,966,947).
    assert 1_000_000 < count < 4_000_000


def test_output_ignores_x_t_and_t():
    model = tiny_model().eval()
    image = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        without = model(None, None, image)
        with_noise = model(torch.randn(2, 1, 64, 64), torch.tensor([3, 700]), image)
        other_noise = model(torch.randn(2, 1, 64, 64), torch.tensor([999, 0]), image)
    torch.testing.assert_close(without, with_noise)
    torch.testing.assert_close(without, other_noise)


def test_output_depends_on_the_image():
    model = tiny_model().eval()
    image = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(None, None, image), model(None, None, image.flip(-1)))


def test_accepts_any_size_divisible_by_the_downsampling_factor():
    model = tiny_model().eval()
    with torch.no_grad():
        assert model(None, None, torch.randn(1, 2, 48, 80)).shape == (1, 1, 48, 80)


def test_finite_under_bf16_autocast():
    model = tiny_model().eval()
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(None, None, torch.randn(2, 2, 64, 64))
    assert torch.isfinite(logits.float()).all()


def test_configured_image_size_not_divisible_is_rejected():
    with pytest.raises(ValueError, match=r"image_size 66 is not divisible by 2\*\*\(len\(filters\)-1\) = 4"):
        tiny_model(image_size=66)


def test_input_not_divisible_is_rejected():
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny_model()(None, None, torch.randn(1, 2, 30, 32))


def test_wrong_image_channels_is_rejected():
    with pytest.raises(ValueError, match="image must have shape"):
        tiny_model()(None, None, torch.randn(1, 5, 64, 64))


def test_empty_filters_are_rejected():
    with pytest.raises(ValueError, match="filters"):
        tiny_model(filters=[])
