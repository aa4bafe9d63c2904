"""Noise (beta) schedules of the forward process, as in Ho et al. (2020) and Nichol & Dhariwal (2021)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_NUM_TIMESTEPS = 1000
COSINE_OFFSET = 0.008
MAX_COSINE_BETA = 0.999


def linear_betas(num_timesteps: int = DEFAULT_NUM_TIMESTEPS) -> np.ndarray:
    """DDPM's linear schedule from 1e-4 to 0.02, scaled by 1000/T so that any T adds the same total noise."""
    _check_num_timesteps(num_timesteps)
    scale = 1000.0 / num_timesteps
    beta_start, beta_end = scale * 1e-4, scale * 0.02
    if beta_end >= 1.0:
        raise ValueError(
            f"the linear schedule needs more than 20 timesteps (its last beta would be {beta_end})"
        )
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def cosine_signal_level(time_fraction: np.ndarray | float) -> np.ndarray:
    """f(u) = cos^2(((u + s) / (1 + s)) * pi / 2); alpha_bar at time fraction u is f(u) / f(0)."""
    angle = (np.asarray(time_fraction, dtype=np.float64) + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * np.pi / 2
    return np.cos(angle) ** 2


def cosine_betas(num_timesteps: int = DEFAULT_NUM_TIMESTEPS) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule; betas are capped at 0.999 to avoid a singular last step."""
    _check_num_timesteps(num_timesteps)
    steps = np.arange(num_timesteps, dtype=np.float64)
    ratio = cosine_signal_level((steps + 1) / num_timesteps) / cosine_signal_level(steps / num_timesteps)
    return np.minimum(1.0 - ratio, MAX_COSINE_BETA)


BETA_SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {"linear": linear_betas, "cosine": cosine_betas}


def get_beta_schedule(name: str, num_timesteps: int = DEFAULT_NUM_TIMESTEPS) -> np.ndarray:
    """Float64 betas of the named schedule ('linear' or 'cosine') for a T-step process."""
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; expected one of {sorted(BETA_SCHEDULES)}")
    return BETA_SCHEDULES[name](num_timesteps)


def input_scaled_betas(betas: np.ndarray, input_scale: float) -> np.ndarray:
    """Betas of the process that diffuses ``input_scale * x_0`` and rescales x_t back to unit variance.

    Input scaling (Chen 2023, "On the importance of noise scheduling for diffusion models"; Chen et al. 2022,
    Pix2Seq-D, for segmentation masks) multiplies the signal-to-noise ratio at every step by ``input_scale**2``:
    alpha_bar' = b^2 alpha_bar / (1 + (b^2 - 1) alpha_bar). A binary mask is so redundant that at the
    unscaled schedule's middle timesteps it can still be read off x_t; b < 1 hides it there, so more of the
    training batch teaches the model to read the image. 1.0 returns the schedule unchanged.
    """
    if isinstance(input_scale, bool) or not (np.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"input_scale must be a finite number > 0 (1 = no scaling), got {input_scale!r}")
    if input_scale == 1.0:
        return betas
    alphas_cumprod = np.cumprod(1.0 - betas)
    scale2 = float(input_scale) ** 2
    shifted = scale2 * alphas_cumprod / (1.0 + (scale2 - 1.0) * alphas_cumprod)
    return 1.0 - shifted / np.append(1.0, shifted[:-1])


def _check_num_timesteps(num_timesteps: int) -> None:
    if (
        isinstance(num_timesteps, bool)
        or not isinstance(num_timesteps, int | np.integer)
        or num_timesteps < 1
    ):
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
