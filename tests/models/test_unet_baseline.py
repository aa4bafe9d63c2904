"""Specification of the UNet baseline: MONAI's DynUNet in 2D, a segmentation network (image in, logits out)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import DynUNet
from torch import nn

import isles_diffseg.models.unet_baseline as unet_baseline
from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models import (
    DIFFUSION,
    DISCRIMINATIVE,
    architecture_kind,
    model_kind,
    segmentation_logits,
)
from isles_diffseg.models.registry import build_model, count_parameters

CONF_DIR = Path(__file__).parents[2] / "conf" / "base"
ALL_VARIANTS = load_variant_group("model", CONF_DIR)
VARIANTS = {name: config for name, config in ALL_VARIANTS.items() if config["architecture"] == "dynunet"}
TINY_VARIANT = "unet_baseline_tiny_cpu"


def tiny_model(**overrides) -> unet_baseline.UNetBaseline:
    torch.manual_seed(0)
    return build_model(VARIANTS[TINY_VARIANT], **overrides)


def test_the_variant_names_are_kept_and_are_dynunet():
    assert set(VARIANTS) == {"unet_baseline", TINY_VARIANT}
    assert isinstance(tiny_model(), DynUNet)


def test_kinds_of_every_variant():
    """The UNet variants are segmentation networks, every other architecture a diffusion denoiser."""
    for name, config in ALL_VARIANTS.items():
        expected = DISCRIMINATIVE if name.startswith("unet_baseline") else DIFFUSION
        assert architecture_kind(config) == expected, name
    assert model_kind(tiny_model()) == DISCRIMINATIVE
    assert model_kind(build_model(ALL_VARIANTS["medsegdiff_tiny_cpu"], image_channels=2)) == DIFFUSION


def test_kind_is_seen_through_wrappers():
    """DDP keeps the network in ``.module``, torch.compile in ``._orig_mod``."""

    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module, attribute: str):
            super().__init__()
            setattr(self, attribute, inner)

    assert model_kind(Wrapper(Wrapper(tiny_model(), "_orig_mod"), "module")) == DISCRIMINATIVE


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_runs_forward_and_backward_with_finite_logits(name):
    torch.manual_seed(0)
    model = build_model(VARIANTS[name], image_channels=3, image_size=32)
    image = torch.randn(2, 3, 32, 32)
    logits = segmentation_logits(model, image)
    assert logits.shape == (2, 1, 32, 32)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_tiny_parameter_count_is_the_dynunet_topology():
    """Counted by hand for filters 8-16-32, 2 inputs, 1 output (convs without bias, affine instance norms):
    input res block 2->8: 144 + 576 + 2*16 (norms) + 16 (1x1 shortcut) + 16 (its norm) = 784;
    res block 8->16 stride 2: 1152 + 2304 + 64 + 128 + 32 = 3680;
    bottleneck 16->32 stride 2: 4608 + 9216 + 128 + 512 + 64 = 14528;
    up 32->16: transposed 2x2 conv 2048 + basic block 32->16 (4608 + 2304 + 64) = 9024;
    up 16->8: 512 + (1152 + 576 + 32) = 2272; 1x1 head 8->1 with bias: 9. Total 30297."""
    assert count_parameters(tiny_model()) == 30297


def test_full_variant_parameter_count():
    # Same order as the seed repository's 2D DynUNet with the same filters (1,966,947 parameters).
    assert 1_900_000 < count_parameters(build_model(VARIANTS["unet_baseline"], image_channels=2)) < 2_000_000


def test_state_dict_is_plain_monai_dynunet():
    """The subclass only changes the call: its weights load into MONAI's own DynUNet, same outputs."""
    model = tiny_model().eval()
    plain = DynUNet(2, 2, 1, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                    filters=[8, 16, 32], res_block=True).eval()
    plain.load_state_dict(model.state_dict())
    image = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image), plain(image))


def test_a_denoiser_style_call_is_refused():
    """Only ``model(image)``: a caller passing (x_t, t, image) has mistaken the network for a denoiser."""
    model = tiny_model().eval()
    image = torch.randn(2, 2, 64, 64)
    with pytest.raises(TypeError, match=r"call it as model\(image\)"):
        model(torch.randn(2, 1, 64, 64), torch.tensor([3, 700]), image)
    with pytest.raises(TypeError, match=r"call it as model\(image\)"):
        model(None, None, image)
    with pytest.raises(TypeError, match=r"call it as model\(image\)"):
        model(image, image)


def test_output_depends_on_the_image():
    model = tiny_model().eval()
    image = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(image), model(image.flip(-1)))


def test_accepts_any_size_divisible_by_the_downsampling_factor():
    model = tiny_model().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 48, 80)).shape == (1, 1, 48, 80)


def test_finite_under_bf16_autocast():
    model = tiny_model().eval()
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 2, 64, 64))
    assert torch.isfinite(logits.float()).all()


def test_configured_image_size_not_divisible_is_rejected():
    with pytest.raises(ValueError, match=r"image_size 66 is not divisible by 2\*\*\(len\(filters\)-1\) = 4"):
        tiny_model(image_size=66)


def test_input_not_divisible_is_rejected():
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny_model()(torch.randn(1, 2, 30, 32))


def test_wrong_image_channels_is_rejected():
    with pytest.raises(ValueError, match="image must have shape"):
        tiny_model()(torch.randn(1, 5, 64, 64))


@pytest.mark.parametrize("filters", [[], [8, 16]])
def test_too_few_filter_levels_are_rejected(filters):
    with pytest.raises(ValueError, match="at least 3 positive integers"):
        tiny_model(filters=filters)


def test_a_run_of_the_retired_hand_written_unet_gets_a_clear_answer():
    with pytest.raises(ValueError, match=r"no longer exists: .*retrain it with training.model=unet_baseline"):
        build_model({"architecture": "unet_baseline", "filters": [8, 16, 32]})
