"""Beta schedules match their closed forms."""

import math

import numpy as np
import pytest
import torch

from isles_diffseg.diffusion import GaussianDiffusion, get_beta_schedule
from isles_diffseg.diffusion.schedules import input_scaled_betas


def cosine_f(u: float, s: float = 0.008) -> float:
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


@pytest.mark.parametrize("num_timesteps", [50, 1000])
def test_cosine_alphas_cumprod_is_f_ratio_until_the_clipped_last_step(num_timesteps):
    alphas_cumprod = GaussianDiffusion(get_beta_schedule("cosine", num_timesteps)).alphas_cumprod.numpy()
    expected = np.array([cosine_f((i + 1) / num_timesteps) / cosine_f(0) for i in range(num_timesteps)])
    np.testing.assert_allclose(alphas_cumprod[:-1], expected[:-1], rtol=1e-10)
    # f(1) = 0 would make the last beta 1; it is clipped to 0.999 instead.
    assert alphas_cumprod[-1] == pytest.approx(expected[-2] * (1 - 0.999), rel=1e-10)


def test_cosine_schedule_reference_values_for_t1000():
    betas = get_beta_schedule("cosine", 1000)
    alphas_cumprod = np.cumprod(1 - betas)
    assert betas.max() == pytest.approx(0.999)
    assert alphas_cumprod[0] == pytest.approx(0.99996, abs=1e-5)
    assert alphas_cumprod[499] == pytest.approx(0.494, abs=2e-3)
    assert alphas_cumprod[999] == pytest.approx(2.4e-9, rel=0.05)


@pytest.mark.parametrize("num_timesteps", [100, 1000, 4000])
def test_linear_schedule_is_scaled_by_1000_over_t(num_timesteps):
    betas = get_beta_schedule("linear", num_timesteps)
    scale = 1000 / num_timesteps
    assert betas.dtype == np.float64 and betas.shape == (num_timesteps,)
    assert betas[0] == pytest.approx(scale * 1e-4) and betas[-1] == pytest.approx(scale * 0.02)
    np.testing.assert_allclose(np.diff(betas), (betas[-1] - betas[0]) / (num_timesteps - 1))


def test_linear_alphas_cumprod_is_product_of_one_minus_beta():
    betas = get_beta_schedule("linear", 1000)
    alphas_cumprod = GaussianDiffusion(betas).alphas_cumprod.numpy()
    np.testing.assert_allclose(
        alphas_cumprod[[0, 9, 999]], [np.prod(1 - betas[: i + 1]) for i in (0, 9, 999)]
    )
    assert alphas_cumprod[-1] == pytest.approx(4.04e-5, rel=0.01)  # DDPM's well-known final signal level


def test_bad_schedule_requests_are_rejected():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        get_beta_schedule("quadratic", 1000)
    with pytest.raises(ValueError, match="positive integer"):
        get_beta_schedule("cosine", 0)
    with pytest.raises(ValueError, match="more than 20"):
        get_beta_schedule("linear", 20)


def test_input_scaled_betas_by_hand_on_a_two_step_process():
    # alpha_bar = [0.5, 0.25]; b = 0.5: alpha_bar' = b^2 ab / (1 + (b^2 - 1) ab) = [0.2, 1/13]
    betas = input_scaled_betas(np.array([0.5, 0.5]), 0.5)
    np.testing.assert_allclose(betas, [0.8, 1 - (1 / 13) / 0.2], rtol=1e-12)
    np.testing.assert_array_equal(input_scaled_betas(np.array([0.5, 0.5]), 1.0), [0.5, 0.5])


@pytest.mark.parametrize("input_scale", [0.1, 0.3, 2.0])
def test_input_scale_multiplies_every_steps_snr_by_its_square(input_scale):
    plain = GaussianDiffusion.from_schedule("cosine", 1000, "x0")
    scaled = GaussianDiffusion.from_schedule("cosine", 1000, "x0", input_scale=input_scale)
    t = torch.tensor([0, 100, 499, 900, 998])
    torch.testing.assert_close(scaled.snr(t, torch.float64), input_scale**2 * plain.snr(t, torch.float64), rtol=1e-9,
                               atol=0)


def test_input_scaled_x_t_is_the_scaled_mask_noised_then_rescaled_to_unit_variance():
    b, t = 0.3, torch.tensor([250, 700])
    plain = GaussianDiffusion.from_schedule("cosine", 1000, "x0")
    scaled = GaussianDiffusion.from_schedule("cosine", 1000, "x0", input_scale=b)
    x0 = torch.tensor([1.0, -1.0], dtype=torch.float64).reshape(2, 1)
    noise = torch.tensor([0.7, -1.3], dtype=torch.float64).reshape(2, 1)
    ab = plain.alpha_bar(t, torch.float64).reshape(2, 1)
    chen = (ab.sqrt() * b * x0 + (1 - ab).sqrt() * noise) / (b**2 * ab + 1 - ab).sqrt()
    torch.testing.assert_close(scaled.q_sample(x0, t, noise), chen, rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf"), True])
def test_bad_input_scales_are_rejected(bad):
    with pytest.raises(ValueError, match="input_scale"):
        input_scaled_betas(get_beta_schedule("cosine", 10), bad)
