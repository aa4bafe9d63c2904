"""Gaussian diffusion process: forward noising, posteriors, parameterisation conversions and training terms.

The mathematics follows improved-diffusion (Nichol & Dhariwal 2021). All schedule quantities are computed
once in float64; lookups cast them to the dtype of the tensor they multiply.

Model contract: ``model(x_t, t, image)`` with ``t`` the ORIGINAL timesteps (LongTensor (B,) in [0, T)),
returning either the output tensor (same shape as ``x_t``) or a dict with that tensor under ``"output"``
plus optional extra entries (e.g. ``"calibration_logits"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypedDict, get_args

import numpy as np
import torch
from torch import Tensor

from isles_diffseg.diffusion.respace import RespacingSpec, respaced_betas, space_timesteps
from isles_diffseg.diffusion.schedules import DEFAULT_NUM_TIMESTEPS, get_beta_schedule, input_scaled_betas

ModelOutputKind = Literal["epsilon", "x0", "v"]
VarianceKind = Literal["fixed_small", "fixed_large"]
DiffusionModel = Callable[[Tensor, Tensor, Tensor], Tensor | Mapping[str, Any]]

_BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "model_log_variance",
)


class TrainingTerms(TypedDict):
    """Per-sample quantities of one training step; the loss combination is left to the caller."""

    mse: Tensor  # (B,) mean squared error between model output and target over non-batch dims
    model_output: Tensor
    target: Tensor
    pred_x0: Tensor  # the model's x_0 estimate, not clamped
    x_t: Tensor
    t: Tensor  # (B,) original timesteps
    noise: Tensor
    extras: dict[str, Any]  # the model's extra outputs, if it returned a dict


def unpack_model_output(raw: Tensor | Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """Split a model's return value into the diffusion output tensor and its extra outputs."""
    if isinstance(raw, Tensor):
        return raw, {}
    if isinstance(raw, Mapping):
        if "output" not in raw:
            raise KeyError(
                f"a model returning a dict must put its prediction under 'output'; got {sorted(raw)}"
            )
        return raw["output"], {key: value for key, value in raw.items() if key != "output"}
    raise TypeError(f"model must return a Tensor or a dict with key 'output', got {type(raw).__name__}")


class GaussianDiffusion:
    """A T-step Gaussian diffusion process, or a respaced chain over some of its steps.

    ``timestep_map[i]`` is the original timestep of step ``i``; it is the identity for the full process and
    the kept steps for a chain made by :meth:`respaced`. Methods index by step; the model always receives
    ``timestep_map[step]``.
    """

    # float64 CPU tables, one value per step, set in __init__.
    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    model_log_variance: Tensor
    timestep_map: Tensor

    def __init__(
        self,
        betas: np.ndarray | Sequence[float],
        model_output: ModelOutputKind = "epsilon",
        variance: VarianceKind = "fixed_small",
        timestep_map: Sequence[int] | None = None,
    ) -> None:
        if model_output not in get_args(ModelOutputKind):
            raise ValueError(f"model_output must be one of {get_args(ModelOutputKind)}, got {model_output!r}")
        if variance not in get_args(VarianceKind):
            raise ValueError(f"variance must be one of {get_args(VarianceKind)}, got {variance!r}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0 or np.any(betas <= 0) or np.any(betas >= 1):
            raise ValueError("betas must be a non-empty 1-D sequence with every value in (0, 1)")
        steps = betas.size
        mapping = np.arange(steps) if timestep_map is None else np.asarray(timestep_map, dtype=np.int64)
        if mapping.shape != (steps,) or np.any(np.diff(mapping) <= 0) or mapping[0] < 0:
            raise ValueError("timestep_map must hold one strictly increasing, non-negative timestep per beta")
        self.model_output: ModelOutputKind = model_output
        self.variance: VarianceKind = variance

        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # posterior_variance[0] is 0 (q(x_0 | x_1, x_0) is a point mass); its log is only ever
        # used behind a t > 0 mask, so the usual trick substitutes step 1's value to stay finite.
        first_variance = posterior_variance[1] if steps > 1 else betas[0]
        posterior_log_variance_clipped = np.log(np.append(first_variance, posterior_variance[1:]))
        model_log_variance = (
            posterior_log_variance_clipped
            if variance == "fixed_small"
            else np.log(np.append(first_variance, betas[1:]))
        )
        tables = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1.0),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance_clipped,
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
            "model_log_variance": model_log_variance,
        }
        for name in _BUFFER_NAMES:
            setattr(self, name, torch.from_numpy(tables[name]))
        self.timestep_map = torch.from_numpy(mapping.copy())
        self._is_respaced = not np.array_equal(mapping, np.arange(steps))
        self._device_tables: dict[tuple[str, torch.device], Tensor] = {}

    @property
    def num_timesteps(self) -> int:
        """Number of steps of this process (T, or the kept count of a respaced chain)."""
        return int(self.betas.numel())

    @property
    def is_respaced(self) -> bool:
        """Whether this is a sampling chain over a subset of an original process's steps."""
        return self._is_respaced

    @classmethod
    def from_schedule(
        cls,
        schedule: str = "cosine",
        num_timesteps: int = DEFAULT_NUM_TIMESTEPS,
        model_output: ModelOutputKind = "epsilon",
        variance: VarianceKind = "fixed_small",
        input_scale: float = 1.0,
    ) -> GaussianDiffusion:
        """The full process over a named beta schedule (see :func:`get_beta_schedule`), its SNR scaled by
        ``input_scale**2`` (see :func:`input_scaled_betas`)."""
        betas = input_scaled_betas(get_beta_schedule(schedule, num_timesteps), input_scale)
        return cls(betas, model_output, variance)

    def respaced(self, spec: RespacingSpec | None) -> GaussianDiffusion:
        """The chain over ``space_timesteps(T, spec)`` with the same alphas_cumprod there (None: self)."""
        if spec is None:
            return self
        if self.is_respaced:
            raise ValueError("respace the full process, not an already respaced chain")
        kept = space_timesteps(self.num_timesteps, spec)
        betas = respaced_betas(self.alphas_cumprod.numpy(), kept)
        return GaussianDiffusion(betas, self.model_output, self.variance, timestep_map=kept)

    def model_timesteps(self, t: Tensor) -> Tensor:
        """Original timesteps to hand to the model for steps ``t`` of this process."""
        return self._table("timestep_map", t.device)[t]

    # ---- lookups -------------------------------------------------------------------------------------
    def alpha_bar(self, t: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """alphas_cumprod at steps ``t``, shape (B,)."""
        return self._table("alphas_cumprod", t.device)[t].to(dtype)

    def snr(self, t: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at steps ``t``, shape (B,)."""
        alpha_bar = self._table("alphas_cumprod", t.device)[t]
        return (alpha_bar / (1.0 - alpha_bar)).to(dtype)

    def _table(self, name: str, device: torch.device) -> Tensor:
        key = (name, device)
        if key not in self._device_tables:
            self._device_tables[key] = getattr(self, name).to(device)
        return self._device_tables[key]

    def _at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Buffer values at steps ``t`` shaped to broadcast against ``like`` (B, ...)."""
        values = self._table(name, t.device)[t].to(like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    # ---- forward process and posterior -----------------------------------------------------------
    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw from q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) using the given noise."""
        return (
            self._at("sqrt_alphas_cumprod", t, x_start) * x_start
            + self._at("sqrt_one_minus_alphas_cumprod", t, x_start) * noise
        )

    def q_posterior_mean_variance(
        self, x_start: Tensor, x_t: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self._at("posterior_mean_coef1", t, x_t) * x_start
            + self._at("posterior_mean_coef2", t, x_t) * x_t
        )
        return (
            mean,
            self._at("posterior_variance", t, x_t),
            self._at("posterior_log_variance_clipped", t, x_t),
        )

    # ---- parameterisation conversions ------------------------------------------------------------
    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)."""
        return (
            self._at("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self._at("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x_start: Tensor) -> Tensor:
        """eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)."""
        return (self._at("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x_start) / self._at(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def v_target(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Velocity v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)."""
        return (
            self._at("sqrt_alphas_cumprod", t, x_start) * noise
            - self._at("sqrt_one_minus_alphas_cumprod", t, x_start) * x_start
        )

    def predict_x0_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
        return (
            self._at("sqrt_alphas_cumprod", t, x_t) * x_t
            - self._at("sqrt_one_minus_alphas_cumprod", t, x_t) * v
        )

    def predict_eps_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t."""
        return (
            self._at("sqrt_alphas_cumprod", t, x_t) * v
            + self._at("sqrt_one_minus_alphas_cumprod", t, x_t) * x_t
        )

    def predict_x0(self, x_t: Tensor, t: Tensor, model_output: Tensor) -> Tensor:
        """The x_0 estimate implied by a model output of this process's ``model_output`` kind (unclamped)."""
        if self.model_output == "epsilon":
            return self.predict_x0_from_eps(x_t, t, model_output)
        if self.model_output == "v":
            return self.predict_x0_from_v(x_t, t, model_output)
        return model_output

    def x0_and_eps(
        self, x_t: Tensor, t: Tensor, model_output: Tensor, clip_x0: bool
    ) -> tuple[Tensor, Tensor]:
        """x_0 estimate (optionally clamped to [-1, 1]) and the noise consistent with it and ``x_t``."""
        x_start = self.predict_x0(x_t, t, model_output)
        if clip_x0:
            x_start = x_start.clamp(-1.0, 1.0)
        elif self.model_output == "epsilon":
            return x_start, model_output
        return x_start, self.predict_eps_from_x0(x_t, t, x_start)

    def training_target(self, x_start: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the model should output for ``x_t = q_sample(x_start, t, noise)``."""
        if self.model_output == "epsilon":
            return noise
        if self.model_output == "v":
            return self.v_target(x_start, t, noise)
        return x_start

    # ---- reverse steps used by the samplers ------------------------------------------------------
    def ddim_step(self, x_start: Tensor, eps: Tensor, t: Tensor, eta: float, noise: Tensor | None) -> Tensor:
        """x_{t-1} of DDIM (Song et al. 2021, eq. 12); eta=1 gives the posterior variance, eta=0 no noise."""
        alpha_bar = self._at("alphas_cumprod", t, x_start)
        alpha_bar_prev = self._at("alphas_cumprod_prev", t, x_start)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
        mean = (
            torch.sqrt(alpha_bar_prev) * x_start
            + torch.sqrt((1 - alpha_bar_prev - sigma**2).clamp_min(0)) * eps
        )
        return mean if noise is None else mean + sigma * noise

    def posterior_step(self, x_t: Tensor, x_start: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        """Ancestral x_{t-1} ~ N(posterior mean, model variance); deterministic mean when noise is None."""
        mean, _, _ = self.q_posterior_mean_variance(x_start, x_t, t)
        if noise is None:
            return mean
        return mean + torch.exp(0.5 * self._at("model_log_variance", t, x_t)) * noise

    # ---- training ----------------------------------------------------------------------------------
    def training_terms(
        self,
        model: DiffusionModel,
        x_start: Tensor,
        image: Tensor,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TrainingTerms:
        """Noise ``x_start`` (signal space, [-1, 1]) at t ~ U{0..T-1} of the FULL process and run the model.

        Returned tensors are per sample; ``model_output`` is cast to ``x_start``'s dtype so the mse is
        computed in that precision even if the model ran under autocast.
        """
        if self.is_respaced:
            raise ValueError(
                "training must sample the full T-step process; respaced chains are for sampling only"
            )
        batch = x_start.shape[0]
        if image.shape[0] != batch:
            raise ValueError(f"image batch {image.shape[0]} does not match x_start batch {batch}")
        if t is None:
            t = torch.randint(0, self.num_timesteps, (batch,), device=x_start.device, generator=generator)
        else:
            self._check_timesteps(t, batch)
        if noise is None:
            noise = torch.randn(
                x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype
            )
        elif noise.shape != x_start.shape:
            raise ValueError(
                f"noise shape {tuple(noise.shape)} differs from x_start shape {tuple(x_start.shape)}"
            )
        x_t = self.q_sample(x_start, t, noise)
        output, extras = unpack_model_output(model(x_t, self.model_timesteps(t), image))
        if output.shape != x_t.shape:
            raise ValueError(
                f"model output shape {tuple(output.shape)} differs from x_t shape {tuple(x_t.shape)}"
            )
        output = output.to(x_start.dtype)
        target = self.training_target(x_start, noise, t)
        return TrainingTerms(
            mse=(output - target).pow(2).flatten(1).mean(dim=1),
            model_output=output,
            target=target,
            pred_x0=self.predict_x0(x_t, t, output),
            x_t=x_t,
            t=t,
            noise=noise,
            extras=extras,
        )

    def _check_timesteps(self, t: Tensor, batch: int) -> None:
        if t.dtype != torch.long or t.shape != (batch,):
            raise ValueError(f"t must be a LongTensor of shape ({batch},), got {t.dtype} {tuple(t.shape)}")
        if bool((t < 0).any()) or bool((t >= self.num_timesteps).any()):
            raise ValueError(f"t must lie in [0, {self.num_timesteps})")
