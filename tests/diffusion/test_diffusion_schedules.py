"""Beta schedules match their closed forms."""

import math

import numpy as np
import pytest

from isles_diffseg.diffusion import GaussianDiffusion, get_beta_schedule


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
