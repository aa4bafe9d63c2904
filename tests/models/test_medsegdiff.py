"""Specification of the MedSegDiff denoiser and its named variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import isles_diffseg.models.medsegdiff as medsegdiff
from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models.registry import build_model, count_parameters

CONF_DIR = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {
    name: config
    for name, config in load_variant_group("model", CONF_DIR).items()
    if config["architecture"] == "medsegdiff"
}
# Parameter counts of the seed repository's models with image_channels=2 (seed_repo_study.md 2.1).
SEED_PARAMETER_COUNTS = {
    "medsegdiff_256_4l_16c_6x4a_128t_1btl_large": 4_806_657,
    "medsegdiff_256_4l_32c_6x4a_128t_1btl_medium_simple": 15_289_089,
    "medsegdiff_256_4l_32c_8x8a_256t_2btl_medium": 16_846_849,
}
SEED_FF_PARSER_COUNTS = {
    "medsegdiff_256_4l_16c_6x4a_128t_1btl_large": 1_507_328,
    "medsegdiff_256_4l_32c_6x4a_128t_1btl_medium_simple": 3_014_656,
}
SMALL_SIZE = 32
WIDE_VARIANT = "medsegdiff_256_4l_32c_8x8a_256t_2btl_medium"
TINY_VARIANT = "medsegdiff_tiny_cpu"


def small_model(name: str, **overrides) -> medsegdiff.MedSegDiff:
    """The variant at <= 32 px with PyTorch's default init: the wiring tests below need an output that
    depends on its inputs, which the variants' zero-initialised output conv hides until training starts."""
    torch.manual_seed(0)
    size = min(VARIANTS[name]["image_size"], SMALL_SIZE)
    return build_model(VARIANTS[name], image_size=size, **{"init": "default", **overrides})


def inputs(model: medsegdiff.MedSegDiff, batch: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    size = model.image_size
    x_t = torch.randn(batch, model.mask_channels, size, size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    image = torch.randn(batch, model.image_channels, size, size, generator=generator)
    return x_t, t, image


def test_all_expected_variants_exist():
    assert set(VARIANTS) == {
        "medsegdiff_32_1l_8c_2x2a_128t_1btl_debug",
        "medsegdiff_256_4l_16c_6x4a_128t_1btl_large",
        "medsegdiff_256_4l_32c_6x4a_128t_1btl_medium_simple",
        WIDE_VARIANT,
        TINY_VARIANT,
    }


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_runs_forward_and_backward_with_finite_output(name):
    model = small_model(name, image_channels=3)
    x_t, t, image = inputs(model)
    out = model(x_t, t, image)
    assert out.shape == (2, 1, model.image_size, model.image_size)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_tiny_cpu_variant_runs_at_its_configured_size():
    model = build_model(VARIANTS[TINY_VARIANT])
    assert model.image_size == 64
    x_t, t, image = inputs(model)
    assert model(x_t, t, image).shape == (2, 1, 64, 64)


@pytest.mark.parametrize("name", sorted(SEED_PARAMETER_COUNTS))
def test_parameter_count_matches_the_seed_design(name):
    model = build_model(VARIANTS[name], image_channels=2)
    count = count_parameters(model)
    print(f"{name}: {count:,} parameters (seed {SEED_PARAMETER_COUNTS[name]:,})")
    assert abs(count - SEED_PARAMETER_COUNTS[name]) <= 0.15 * SEED_PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", sorted(SEED_FF_PARSER_COUNTS))
def test_ff_parser_keeps_one_full_fft_filter_per_channel_and_level(name):
    model = build_model(VARIANTS[name])
    ff_params = sum(fusion.ff_parser.spectral_filter.numel() for fusion in model.fusions)
    assert ff_params == SEED_FF_PARSER_COUNTS[name]


def test_gradient_reaches_both_encoder_stems():
    model = small_model(TINY_VARIANT)
    model(*inputs(model)).square().mean().backward()
    for stem in (model.mask_stem, model.image_stem):
        assert stem.weight.grad is not None
        assert stem.weight.grad.abs().sum() > 0


def test_time_embedding_is_sinusoidal_not_linear_in_t():
    model = small_model(TINY_VARIANT)
    t = torch.tensor([0, 1, 500, 999])
    emb = model.time_embedding(t)
    assert not torch.allclose(emb[1], emb[2])
    # A linear-in-t embedding (the seed bug) would make emb(500) - emb(0) = 500 * (emb(1) - emb(0)).
    assert not torch.allclose(emb[2] - emb[0], 500 * (emb[1] - emb[0]), rtol=1e-3, atol=1e-3)


def test_output_depends_on_t_alone():
    model = small_model(TINY_VARIANT).eval()
    x_t, _, image = inputs(model)
    with torch.no_grad():
        early = model(x_t, torch.tensor([10, 10]), image)
        late = model(x_t, torch.tensor([900, 900]), image)
    assert not torch.allclose(early, late)


def test_output_depends_on_image_alone():
    model = small_model(TINY_VARIANT).eval()
    x_t, t, image = inputs(model)
    with torch.no_grad():
        first = model(x_t, t, image)
        second = model(x_t, t, image + torch.randn_like(image))
    assert not torch.allclose(first, second)


def test_output_depends_on_x_t_alone():
    model = small_model(TINY_VARIANT).eval()
    x_t, t, image = inputs(model)
    with torch.no_grad():
        assert not torch.allclose(model(x_t, t, image), model(-x_t, t, image))


def test_wide_variant_is_finite_under_bf16_autocast():
    model = small_model(WIDE_VARIANT).eval()
    x_t, t, image = inputs(model)
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(x_t, t, image)
    assert torch.isfinite(out.float()).all()
    with torch.no_grad():
        reference = model(x_t, t, image)
    assert (out.float() - reference).abs().mean() < 0.1 * reference.abs().mean()


def test_ff_parser_starts_as_identity_and_runs_in_float32():
    parser = medsegdiff.FFParser(channels=3, size=8)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(parser(x), x, atol=1e-5, rtol=1e-5)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = parser(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), x, atol=0.05, rtol=0.05)


def test_image_size_not_divisible_by_the_downsampling_factor_is_rejected():
    with pytest.raises(ValueError, match=r"image_size 100 is not divisible by 2\*\*\(num_layers-1\) = 8"):
        build_model(VARIANTS["medsegdiff_256_4l_16c_6x4a_128t_1btl_large"], image_size=100)


def test_first_conv_channels_must_suit_group_norm():
    with pytest.raises(ValueError, match="multiple of 8"):
        build_model(VARIANTS[TINY_VARIANT], first_conv_channels=12)


def test_input_of_another_size_than_configured_is_rejected():
    model = small_model(TINY_VARIANT)
    x_t, t, image = inputs(model)
    with pytest.raises(ValueError, match="x_t must have shape"):
        model(x_t[..., :16, :16], t, image[..., :16, :16])


def test_wrong_image_channels_is_rejected():
    model = small_model(TINY_VARIANT)
    x_t, t, image = inputs(model)
    with pytest.raises(ValueError, match="image must have shape"):
        model(x_t, t, image[:, :1])


def test_every_variant_starts_from_a_zero_prediction():
    """improved-diffusion's output init: the first loss is the target's own scale (order 1), not 10^3."""
    for name in VARIANTS:
        assert VARIANTS[name]["init"] == "zero_out"
    model = small_model(TINY_VARIANT, init="zero_out")
    x_t, t, image = inputs(model)
    out = model(x_t, t, image)
    assert torch.equal(out, torch.zeros_like(out))
    (out - 1).square().mean().backward()  # against a target the output conv learns from the first step
    assert model.final_conv.weight.grad.abs().sum() > 0


def test_reference_he_init_starts_far_from_the_target_scale():
    """The reference design's Kaiming init (slope 0.01) compounds through the residual sums: outputs of
    std ~170 at 256 px, and already far above 1 on the tiny variant, against a target in [-1, 1]."""
    with torch.no_grad():
        he = small_model(TINY_VARIANT, init="he")
        default = small_model(TINY_VARIANT, init="default")
        x_t, t, image = inputs(he)
        assert he(x_t, t, image).std() > 5
        assert default(x_t, t, image).std() < 2


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="init must be one of"):
        small_model(TINY_VARIANT, init="xavier")
