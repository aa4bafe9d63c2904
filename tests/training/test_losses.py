"""Specification of the diffusion loss options that decide whether a run learns at 256 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isles_diffseg.diffusion import GaussianDiffusion
from isles_diffseg.training.losses import (
    TIMESTEP_BUCKETS,
    DiffusionLoss,
    SegmentationLoss,
    build_loss,
    soft_dice_per_sample,
    timestep_bucket_metrics,
)


def _terms(output: torch.Tensor, target: torch.Tensor, t: list[int]) -> dict:
    """Training terms as GaussianDiffusion.training_terms returns them, with a chosen output (x0 kind)."""
    mse = (output - target).pow(2).flatten(1).mean(1)
    return {"mse": mse, "model_output": output, "target": target, "pred_x0": output, "x_t": target,
            "t": torch.tensor(t), "noise": torch.zeros_like(target), "extras": {}}


DIFFUSION = GaussianDiffusion.from_schedule("cosine", 1000, "x0")


def test_foreground_weight_scales_lesion_pixels_in_the_mse():
    # one sample of 4 pixels, one of them lesion; error 1 on the lesion pixel, 0 elsewhere
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    target = 2 * mask - 1
    output = target.clone()
    output[0, 0, 0, 0] = 0.0
    plain = DiffusionLoss()(_terms(output, target, [10]), mask, DIFFUSION, step=0)
    weighted = DiffusionLoss(foreground_weight=5.0)(_terms(output, target, [10]), mask, DIFFUSION, step=0)
    assert plain["mse"].item() == pytest.approx(1 / 4)
    assert weighted["mse"].item() == pytest.approx(5 / (5 + 3))  # weights 5,1,1,1; squared errors 1,0,0,0
    assert weighted["loss"].item() == pytest.approx(5 / 8)


def test_foreground_weight_below_one_is_rejected():
    with pytest.raises(ValueError, match="foreground_weight must be >= 1"):
        build_loss({"kind": "diffusion", "name": "x", "foreground_weight": 0.5})


def test_flat_noise_weighting_keeps_aux_terms_at_noisy_timesteps():
    """alpha_bar weighting silences the Dice/BCE at t near T (alpha_bar ~ 0); 'none' keeps them whole."""
    mask = torch.zeros(1, 1, 2, 2)
    output = torch.zeros(1, 1, 2, 2)  # logits 0: p = 0.5 everywhere
    terms = _terms(output, 2 * mask - 1, [999])
    weighted = DiffusionLoss(bce_weight=1.0, noise_weighting="alpha_bar")(terms, mask, DIFFUSION, step=0)
    flat = DiffusionLoss(bce_weight=1.0, noise_weighting="none")(terms, mask, DIFFUSION, step=0)
    assert flat["aux_bce"].item() == pytest.approx(np.log(2))
    assert weighted["aux_bce"].item() == pytest.approx(np.log(2) * DIFFUSION.alphas_cumprod[999].item(), rel=1e-5)
    assert weighted["aux_bce"].item() < 1e-6


def test_aux_ramp_reaches_full_weight_after_its_warmup_steps():
    loss = DiffusionLoss(dice_weight=1.0, aux_warmup_steps=100)
    assert [loss.aux_ramp(s) for s in (0, 50, 100, 5000)] == [0.0, 0.5, 1.0, 1.0]


def test_mse_is_reported_per_timestep_quarter():
    target = -torch.ones(4, 1, 2, 2)
    output = target + torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)  # per-sample mse 1, 4, 9, 16
    out = DiffusionLoss()(_terms(output, target, [0, 249, 250, 999]), torch.zeros_like(target), DIFFUSION, step=0)
    assert out["mse_by_t_count"].tolist() == [2.0, 1.0, 0.0, 1.0]
    assert out["mse_by_t_sum"].tolist() == [5.0, 9.0, 0.0, 16.0]
    logged = timestep_bucket_metrics(out["mse_by_t_sum"], out["mse_by_t_count"], DIFFUSION)
    assert logged == {"train_mse_by_t/0000-0249": 2.5, "train_mse_by_t/0250-0499": 9.0,
                      "train_mse_by_t/0750-0999": 16.0}


def test_timestep_buckets_follow_the_process_length():
    short = GaussianDiffusion.from_schedule("cosine", 10, "x0")
    counts = torch.ones(TIMESTEP_BUCKETS)
    names = list(timestep_bucket_metrics(torch.arange(4.0), counts, short))
    # bucket k holds t with t * 4 // 10 == k: {0,1,2}, {3,4}, {5,6,7}, {8,9}
    assert names == ["train_mse_by_t/0000-0002", "train_mse_by_t/0003-0004", "train_mse_by_t/0005-0007",
                     "train_mse_by_t/0008-0009"]
    t = torch.arange(10)
    assert (t * TIMESTEP_BUCKETS // 10).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


# ---- each term against numbers worked out by hand ---------------------------------------------------
# A 4-step process with beta = 1/2 everywhere: alpha_bar(t) = 2^-(t+1), i.e. 1/2, 1/4, 1/8, 1/16.
HALVING = GaussianDiffusion(np.full(4, 0.5), "x0")
LOG2 = np.log(2.0)


def _softplus(x: float) -> float:
    return float(np.log1p(np.exp(x)))


def test_soft_dice_is_computed_per_sample_then_left_to_the_caller_to_average():
    probabilities = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # sample 0: (2 * 0.5 + 1) / (1 + 1 + 1) = 2/3; sample 1: (0 + 1) / (4 + 0 + 1) = 1/5
    assert soft_dice_per_sample(probabilities, target).tolist() == pytest.approx([1 - 2 / 3, 1 - 1 / 5])
    # the smoothing constant enters numerator and denominator: (1 + 0.5) / (2 + 0.5) with smooth 0.5
    assert soft_dice_per_sample(probabilities[:1], target[:1], smooth=0.5).item() == pytest.approx(1 - 1.5 / 2.5)


def test_aux_bce_reads_x0_as_logits_scaled_by_aux_logit_scale():
    mask = torch.tensor([[[[1.0, 0.0]]]])
    x0 = torch.tensor([[[[0.5, -0.25]]]])
    # logits 4 * x0 = (2, -1): BCE = softplus(-2) on the lesion pixel, softplus(-1) on the background one
    loss = DiffusionLoss(mse_weight=0.0, bce_weight=1.0, noise_weighting="none")
    out = loss(_terms(x0, 2 * mask - 1, [0]), mask, HALVING, step=0)
    expected = (_softplus(-2.0) + _softplus(-1.0)) / 2
    assert out["aux_bce"].item() == pytest.approx(expected, rel=1e-6)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    scaled = DiffusionLoss(mse_weight=0.0, bce_weight=1.0, noise_weighting="none", aux_logit_scale=2.0)
    out = scaled(_terms(x0, 2 * mask - 1, [0]), mask, HALVING, step=0)
    assert out["aux_bce"].item() == pytest.approx((_softplus(-1.0) + _softplus(-0.5)) / 2, rel=1e-6)


def test_aux_dice_is_soft_dice_of_the_sigmoid_of_the_scaled_x0():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    x0 = torch.zeros(1, 1, 2, 2)  # sigmoid(0) = 1/2 everywhere: sum p = 2, sum g = 1, sum pg = 1/2
    out = DiffusionLoss(mse_weight=0.0, dice_weight=1.0, noise_weighting="none")(
        _terms(x0, 2 * mask - 1, [0]), mask, HALVING, step=0)
    assert out["aux_dice"].item() == pytest.approx(1 - (2 * 0.5 + 1) / (2 + 1 + 1))
    assert out["loss"].item() == pytest.approx(0.5)


def test_total_is_weighted_sum_of_mse_dice_and_bce():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    target = 2 * mask - 1
    x0 = torch.zeros(1, 1, 2, 2)  # squared errors 1 on every pixel: mse 1
    loss = DiffusionLoss(mse_weight=2.0, dice_weight=3.0, bce_weight=5.0, noise_weighting="none")
    out = loss(_terms(x0, target, [0]), mask, HALVING, step=0)
    assert out["mse"].item() == pytest.approx(1.0)
    assert out["aux_dice"].item() == pytest.approx(0.5) and out["aux_bce"].item() == pytest.approx(LOG2)
    assert out["loss"].item() == pytest.approx(2.0 * 1.0 + 3.0 * 0.5 + 5.0 * LOG2, rel=1e-6)


def test_alpha_bar_weighting_weighs_each_sample_by_its_own_timestep():
    mask = torch.zeros(2, 1, 1, 2)
    x0 = torch.zeros(2, 1, 1, 2)  # BCE log 2 for both samples
    terms = _terms(x0, 2 * mask - 1, [0, 3])  # alpha_bar 1/2 and 1/16
    out = DiffusionLoss(mse_weight=0.0, bce_weight=1.0, dice_weight=1.0)(terms, mask, HALVING, step=0)
    assert out["aux_bce"].item() == pytest.approx((0.5 + 1 / 16) / 2 * LOG2, rel=1e-6)
    # Dice of an empty target with p = 1/2 on 2 pixels: 1 - 1 / (1 + 0 + 1) = 1/2
    assert out["aux_dice"].item() == pytest.approx((0.5 + 1 / 16) / 2 * 0.5, rel=1e-6)
    # the MSE itself is never noise-weighted
    assert out["mse"].item() == pytest.approx(1.0)


@pytest.mark.parametrize(("step", "ramp"), [(0, 0.0), (25, 0.25), (50, 0.5), (100, 1.0), (10_000, 1.0)])
def test_aux_ramp_scales_the_aux_terms_in_the_total_but_not_the_mse(step, ramp):
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    x0 = torch.zeros(1, 1, 2, 2)  # mse 1, aux Dice 1/2, aux BCE log 2
    loss = DiffusionLoss(dice_weight=1.0, bce_weight=1.0, noise_weighting="none", aux_warmup_steps=100)
    out = loss(_terms(x0, 2 * mask - 1, [0]), mask, HALVING, step=step)
    assert out["aux_ramp"].item() == pytest.approx(ramp)
    assert out["loss"].item() == pytest.approx(1.0 + ramp * (0.5 + LOG2), rel=1e-6)
    # the components are reported unramped, so a curve shows what the term is, not how much it counts
    assert out["aux_dice"].item() == pytest.approx(0.5)


def test_without_warmup_the_aux_terms_count_fully_from_step_zero():
    assert DiffusionLoss(dice_weight=1.0).aux_ramp(0) == 1.0


def test_no_aux_weights_means_no_aux_terms_at_all():
    mask = torch.ones(1, 1, 1, 2)
    out = DiffusionLoss()(_terms(torch.zeros(1, 1, 1, 2), 2 * mask - 1, [0]), mask, HALVING, step=0)
    assert not {"aux_dice", "aux_bce", "aux_ramp"} & set(out)
    assert out["loss"].item() == pytest.approx(1.0)


def test_calibration_term_is_unclamped_bce_on_the_calibration_logits():
    mask = torch.tensor([[[[1.0, 0.0]]]])
    terms = _terms(2 * mask - 1, 2 * mask - 1, [0])  # perfect x0: mse 0
    terms["extras"] = {"calibration_logits": torch.tensor([[[[3.0, 2.0]]]])}
    out = DiffusionLoss(calibration_weight=0.5)(terms, mask, HALVING, step=0)
    # a logit of 3 on the lesion and 2 on the background: the seed clamped logits to [0, 1] first
    expected = (_softplus(-3.0) + _softplus(2.0)) / 2
    assert out["calibration_bce"].item() == pytest.approx(expected, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * expected, rel=1e-6)


def test_calibration_term_without_a_calibration_head_is_an_error():
    mask = torch.zeros(1, 1, 1, 2)
    with pytest.raises(ValueError, match="calibration head"):
        DiffusionLoss(calibration_weight=1.0)(_terms(mask, mask, [0]), mask, HALVING, step=0)


def test_foreground_weight_is_a_weighted_mean_per_sample_then_a_batch_mean():
    # sample 0: lesion pixel wrong by 1 (of 2 pixels, 1 lesion); sample 1: no lesion, one pixel wrong by 1
    mask = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    target = 2 * mask - 1
    output = target.clone()
    output[0, 0, 0, 0] -= 1.0
    output[1, 0, 0, 0] += 1.0
    out = DiffusionLoss(foreground_weight=3.0)(_terms(output, target, [0, 0]), mask, HALVING, step=0)
    # sample 0: 3 * 1 / (3 + 1) = 3/4; sample 1: 1 / (1 + 1) = 1/2; pooled over the batch it would be 4/6
    assert out["mse"].item() == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_segmentation_loss_is_weighted_soft_dice_plus_bce_on_logits():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]])
    out = SegmentationLoss(dice_weight=2.0, bce_weight=3.0)(logits, mask)
    assert out["dice"].item() == pytest.approx(0.5)
    assert out["bce"].item() == pytest.approx(LOG2)
    assert out["loss"].item() == pytest.approx(2.0 * 0.5 + 3.0 * LOG2, rel=1e-6)
    sure = SegmentationLoss()(torch.tensor([[[[20.0, -20.0], [-20.0, -20.0]]]]), mask)
    assert sure["dice"].item() == pytest.approx(0.0, abs=1e-6) and sure["bce"].item() == pytest.approx(0.0, abs=1e-6)


def test_timestep_power_skews_training_timesteps_towards_the_noisy_end():
    from isles_diffseg.training.losses import DiffusionLoss

    generator = torch.Generator().manual_seed(0)
    uniform = DiffusionLoss().sample_timesteps(20000, 1000, torch.device("cpu"), generator)
    skewed = DiffusionLoss(timestep_power=2.0).sample_timesteps(20000, 1000, torch.device("cpu"), generator)
    # p = 1: mean (T - 1) / 2; p = 2: density 2t/T^2, mean 2T/3; a quarter of draws above 750 vs 44 %
    assert float(uniform.float().mean()) == pytest.approx(499.5, abs=6)
    assert float(skewed.float().mean()) == pytest.approx(666.7, abs=6)
    assert float((skewed >= 750).float().mean()) == pytest.approx(1 - 0.75**2, abs=0.015)
    assert int(skewed.min()) >= 0 and int(skewed.max()) == 999
    with pytest.raises(ValueError, match="timestep_power must be >= 1"):
        DiffusionLoss(timestep_power=0.5)


def test_timestep_power_is_read_from_the_loss_variant():
    from isles_diffseg.training.losses import build_loss

    loss = build_loss({"kind": "diffusion", "name": "x", "timestep_power": 3.0})
    assert loss.timestep_power == 3.0
    t = loss.sample_timesteps(5000, 1000, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert float(t.float().mean()) == pytest.approx(750, abs=10)  # p / (p + 1) T
