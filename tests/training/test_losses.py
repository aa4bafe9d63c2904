"""Specification of the diffusion loss options that decide whether a run learns at 256 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isles_diffseg.diffusion import GaussianDiffusion
from isles_diffseg.training.losses import TIMESTEP_BUCKETS, DiffusionLoss, build_loss, timestep_bucket_metrics


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
