"""Reverse-process samplers (DDIM and ancestral DDPM) over the full or a respaced chain.

Both run without an autograd graph, batched, and return a :class:`SampleResult` whose ``sample`` is the
final x_0 in signal space ([-1, 1] when ``clip_x0``; map it with ``signal_to_probability``). The model is
called under ``torch.autocast`` when ``amp_dtype`` is given; the diffusion update always runs in float32.
The caller chooses the model's train/eval mode. The noise comes from ``generator`` in batch order unless the
caller gives the initial ``noise`` and a ``step_noise`` function (per-sample keyed noise, so that a sample
does not depend on its batch: ``isles_diffseg.inference.keyed_noise``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from isles_diffseg.diffusion.gaussian import DiffusionModel, GaussianDiffusion, unpack_model_output
from isles_diffseg.diffusion.respace import RespacingSpec

AMP_DTYPES = (torch.bfloat16, torch.float16)

# (loop position, shape) -> the noise of that step; lets a caller key the noise to each sample (see
# inference/keyed_noise.py) instead of drawing it for the batch from one generator
StepNoise = Callable[[int, tuple[int, ...]], Tensor]

# (chain, x_t, x0 estimate, eps estimate, step indices, noise or None) -> x_{t-1}
ReverseStep = Callable[[GaussianDiffusion, Tensor, Tensor, Tensor, Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class SampleResult:
    """Final sample and, when requested, intermediate states of the same sampling run.

    ``snapshots_xt[k]`` is the chain's state x_t entering the step at ORIGINAL timestep
    ``snapshot_timesteps[k]`` and ``snapshots_x0[k]`` the x_0 predicted there; both (S, B, C, H, W), in the
    order visited (noisiest first). Without snapshots they are None and the timesteps empty.
    """

    sample: Tensor
    snapshot_timesteps: tuple[int, ...] = ()
    snapshots_xt: Tensor | None = None
    snapshots_x0: Tensor | None = None


@torch.no_grad()
def ddim_sample(
    diffusion: GaussianDiffusion,
    model: DiffusionModel,
    image: Tensor,
    *,
    respacing: RespacingSpec | None = "ddim50",
    eta: float = 0.0,
    clip_x0: bool = True,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    amp_dtype: torch.dtype | None = None,
    snapshots: int = 0,
    mask_channels: int = 1,
    step_noise: StepNoise | None = None,
) -> SampleResult:
    """DDIM sampling (Song et al. 2021) over ``diffusion.respaced(respacing)``; eta=0 is deterministic."""
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")

    def step(  # a ReverseStep: DDIM moves from (x0, eps) alone, x_t is not needed
        chain: GaussianDiffusion, _x_t: Tensor, x0: Tensor, eps: Tensor, t: Tensor, z: Tensor | None
    ) -> Tensor:
        return chain.ddim_step(x0, eps, t, eta, z)

    return _run_chain(
        diffusion.respaced(respacing),
        model,
        image,
        step,
        needs_noise=eta > 0,
        clip_x0=clip_x0,
        noise=noise,
        generator=generator,
        amp_dtype=amp_dtype,
        snapshots=snapshots,
        mask_channels=mask_channels,
        step_noise=step_noise,
    )


@torch.no_grad()
def ddpm_sample(
    diffusion: GaussianDiffusion,
    model: DiffusionModel,
    image: Tensor,
    *,
    respacing: RespacingSpec | None = None,
    clip_x0: bool = True,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    amp_dtype: torch.dtype | None = None,
    snapshots: int = 0,
    mask_channels: int = 1,
    step_noise: StepNoise | None = None,
) -> SampleResult:
    """Ancestral sampling with the (respaced) chain's own posterior; ``respacing=None`` uses all T steps."""

    def step(  # a ReverseStep: the posterior q(x_{t-1} | x_t, x0) does not need eps
        chain: GaussianDiffusion, x_t: Tensor, x0: Tensor, _eps: Tensor, t: Tensor, z: Tensor | None
    ) -> Tensor:
        return chain.posterior_step(x_t, x0, t, z)

    return _run_chain(
        diffusion.respaced(respacing),
        model,
        image,
        step,
        needs_noise=True,
        clip_x0=clip_x0,
        noise=noise,
        generator=generator,
        amp_dtype=amp_dtype,
        snapshots=snapshots,
        mask_channels=mask_channels,
        step_noise=step_noise,
    )


def snapshot_positions(num_steps: int, snapshots: int) -> list[int]:
    """Up to ``snapshots`` evenly spaced loop positions in [0, num_steps), first and last included."""
    if isinstance(snapshots, bool) and snapshots:
        raise TypeError("snapshots takes the number of snapshots to record, not True")
    if snapshots < 0:
        raise ValueError(f"snapshots must be >= 0, got {snapshots}")
    if snapshots == 0:
        return []
    return sorted({int(p) for p in np.rint(np.linspace(0, num_steps - 1, min(snapshots, num_steps)))})


def _run_chain(
    chain: GaussianDiffusion,
    model: DiffusionModel,
    image: Tensor,
    step: ReverseStep,
    *,
    needs_noise: bool,
    clip_x0: bool,
    noise: Tensor | None,
    generator: torch.Generator | None,
    amp_dtype: torch.dtype | None,
    snapshots: int,
    mask_channels: int,
    step_noise: StepNoise | None = None,
) -> SampleResult:
    if image.ndim < 3:
        raise ValueError(f"image must be (B, C, *spatial), got shape {tuple(image.shape)}")
    if mask_channels < 1:
        raise ValueError(f"mask_channels must be >= 1, got {mask_channels}")
    if amp_dtype is not None and amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be None or one of {AMP_DTYPES}, got {amp_dtype}")
    device = image.device
    shape = (image.shape[0], mask_channels, *image.shape[2:])
    if noise is None:
        x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"initial noise must have shape {shape}, got {tuple(noise.shape)}")
    else:
        x = noise.to(device=device, dtype=torch.float32)

    recorded = set(snapshot_positions(chain.num_timesteps, snapshots))
    labels: list[int] = []
    states: list[Tensor] = []
    estimates: list[Tensor] = []
    for position, index in enumerate(reversed(range(chain.num_timesteps))):
        t = torch.full((shape[0],), index, device=device, dtype=torch.long)
        with _autocast(device, amp_dtype):
            raw = model(x, chain.model_timesteps(t), image)
        output, _ = unpack_model_output(raw)
        if output.shape != x.shape:
            raise ValueError(
                f"model output shape {tuple(output.shape)} differs from x_t shape {tuple(x.shape)}"
            )
        x0, eps = chain.x0_and_eps(x, t, output.float(), clip_x0)
        if position in recorded:
            labels.append(int(chain.timestep_map[index]))
            states.append(x)
            estimates.append(x0)
        if needs_noise and index > 0:
            z = (torch.randn(shape, generator=generator, device=device, dtype=torch.float32) if step_noise is None
                 else step_noise(position, shape))
        else:
            z = None
        x = step(chain, x, x0, eps, t, z)

    if not recorded:
        return SampleResult(sample=x)
    return SampleResult(x, tuple(labels), torch.stack(states), torch.stack(estimates))


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)
