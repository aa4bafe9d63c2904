"""Specification of the official-design MedSegDiff (UNet + conditioning highway) and its variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import isles_diffseg.models.org_medsegdiff as org
from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models.registry import build_model, count_parameters

CONF_DIR = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {
    name: config
    for name, config in load_variant_group("model", CONF_DIR).items()
    if config["architecture"] == "org_medsegdiff"
}
FULL_SIZE = ["org_medsegdiff_S", "org_medsegdiff_B", "org_medsegdiff_L"]
TINY = "org_medsegdiff_tiny_cpu"
# Parameters of the official UNet alone (the seed's port minus its 15,726,944-parameter highway,
# seed_repo_study.md 2.2): the UNet here is the same network, only the highway differs.
OFFICIAL_UNET_PARAMETERS = {
    "org_medsegdiff_S": 232_155_521,
    "org_medsegdiff_B": 292_767_617,
    "org_medsegdiff_L": 124_050_945,
}
# Whole model with image_channels=2; the highway pools as often as the UNet downsamples.
PARAMETERS = {
    "org_medsegdiff_S": 234_087_874,
    "org_medsegdiff_B": 300_145_154,
    "org_medsegdiff_L": 142_724_322,
    "org_medsegdiff_tiny_cpu": 197_426,
}
# Narrow enough to run forward + backward in well under a second; 64 px leaves the six-level
# L a 2x2 bottleneck and lets B and L reach their attention rates 16 and 32.
SMALL = {"image_size": 64, "model_channels": 16, "highway_channels": 8, "highway_max_channels": 32}


def small_model(name: str, **overrides) -> org.OrgMedSegDiff:
    torch.manual_seed(0)
    settings = {} if name == TINY else dict(SMALL)
    return build_model(VARIANTS[name], **{**settings, **overrides})


def wake_zero_initialised(model: nn.Module) -> nn.Module:
    """Give the zero-initialised layers small random weights, as after some training.

    At initialisation the output conv is zero, so no input or parameter upstream of it can change
    the output yet; sensitivity and gradient-flow checks need it awake.
    """
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def inputs(size: int = 64, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 1, size, size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    image = torch.rand(batch, 2, size, size, generator=generator)
    return x_t, t, image


def test_every_variant_has_a_yaml_file():
    assert set(VARIANTS) == {*FULL_SIZE, TINY}


def test_full_size_variants_build_from_yaml_with_the_official_unet(record_property):
    for name in FULL_SIZE:
        model = build_model(VARIANTS[name])
        total = count_parameters(model)
        highway = count_parameters(model.highway) + count_parameters(model.anchor_projection)
        del model
        record_property(f"{name}_parameters", total)
        record_property(f"{name}_highway_parameters", highway)
        assert total == PARAMETERS[name]
        assert total - highway == OFFICIAL_UNET_PARAMETERS[name]


def test_tiny_variant_builds_at_its_configured_size_and_runs():
    model = build_model(VARIANTS[TINY])
    assert count_parameters(model) == PARAMETERS[TINY]
    out = model(*inputs(VARIANTS[TINY]["image_size"]))
    assert out["output"].shape == (2, 1, 64, 64)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_forward_and_backward_at_small_size(name):
    model = small_model(name)
    x_t, t, image = inputs(64)
    out = model(x_t, t, image)
    assert set(out) == {"output", "calibration_logits"}
    assert out["output"].shape == x_t.shape
    assert out["calibration_logits"].shape == (2, 1, 64, 64)
    assert all(torch.isfinite(value).all() for value in out.values())
    (out["output"].square().mean() + out["calibration_logits"].mean()).backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)


def test_diffusion_loss_alone_trains_the_highway_features_but_not_its_calibration_head():
    model = wake_zero_initialised(small_model(TINY))
    x_t, t, image = inputs(32)
    F.mse_loss(model(x_t, t, image)["output"], torch.randn_like(x_t)).backward()
    highway = model.highway
    for name, parameter in highway.named_parameters():
        if name.startswith("calibration_head"):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_calibration_logits_are_raw_and_a_bce_step_moves_them():
    model = small_model(TINY)
    with torch.no_grad():
        model.highway.calibration_head.weight.mul_(50.0)
    x_t, t, image = inputs(32)
    logits = model(x_t, t, image)["calibration_logits"]
    assert logits.min() < -1.0 and logits.max() > 2.0  # a clamp to [0, 1] would forbid both

    target = torch.zeros_like(logits)
    logits.retain_grad()
    F.binary_cross_entropy_with_logits(logits, target).backward()
    assert (logits.grad[logits > 1.0] != 0).all()  # no dead gradient outside [0, 1]

    optimizer = torch.optim.SGD(model.highway.parameters(), lr=1.0)
    optimizer.step()
    with torch.no_grad():
        moved = model(x_t, t, image)["calibration_logits"]
    assert moved.mean() < logits.mean() - 0.1


def test_output_changes_with_t_alone_and_with_image_alone():
    model = wake_zero_initialised(small_model(TINY)).eval()
    x_t, t, image = inputs(32)
    with torch.no_grad():
        reference = model(x_t, t, image)["output"]
        other_t = model(x_t, (t + 250) % 1000, image)["output"]
        other_image = model(x_t, t, image.flip(-1))["output"]
        again = model(x_t, t, image)["output"]
    assert torch.equal(reference, again)
    assert not torch.allclose(reference, other_t, atol=1e-6)
    assert not torch.allclose(reference, other_image, atol=1e-6)


def test_training_mode_is_deterministic_and_builds_nothing_in_forward():
    model = wake_zero_initialised(small_model(TINY)).train()
    names_before = list(model.state_dict())
    x_t, t, image = inputs(32)
    first, second = model(x_t, t, image), model(x_t, t, image)
    assert list(model.state_dict()) == names_before
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def test_bf16_autocast_forward_is_finite():
    model = wake_zero_initialised(small_model("org_medsegdiff_B"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*inputs(64))
    assert all(torch.isfinite(value.float()).all() for value in out.values())


def test_without_highway_the_output_tensor_is_returned():
    model = small_model(TINY, use_highway=False)
    x_t, t, image = inputs(32)
    out = model(x_t, t, image)
    assert isinstance(out, torch.Tensor) and out.shape == x_t.shape
    assert model.highway is None


def test_highway_depth_follows_the_unet_unless_configured():
    assert small_model("org_medsegdiff_L").highway.depth == 5
    assert small_model(TINY).highway.depth == 1
    assert small_model(TINY, highway_depth=3).highway.depth == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 60}, "multiple of 32"),  # L downsamples five times
        ({"image_size": 64, "highway_depth": 7}, "highway pools 7 times"),
        ({"num_heads": 3}, "num_heads=3"),
    ],
)
def test_impossible_configurations_raise_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_model("org_medsegdiff_L", **overrides)


def test_inputs_of_the_wrong_shape_raise_a_clear_value_error():
    model = small_model(TINY)
    x_t, t, image = inputs(64)
    with pytest.raises(ValueError, match="image channels"):
        model(x_t, t, image[:, :1])
    with pytest.raises(ValueError, match="multiples of 2"):
        model(*inputs(63))
