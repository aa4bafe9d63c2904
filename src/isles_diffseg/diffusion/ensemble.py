"""Ensembles of diffusion samples: drawing N members per slice in one batched run, and their statistics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from isles_diffseg.diffusion.gaussian import DiffusionModel, GaussianDiffusion
from isles_diffseg.diffusion.masks import signal_to_probability
from isles_diffseg.diffusion.samplers import SampleResult

Sampler = Callable[..., SampleResult]
UncertaintyKind = Literal["variance", "entropy"]


def sample_ensemble(
    sampler: Sampler,
    diffusion: GaussianDiffusion,
    model: DiffusionModel,
    image: Tensor,
    *,
    members: int,
    max_batch_size: int | None = None,
    **sampler_options: Any,
) -> Tensor:
    """Draw ``members`` samples per image as probabilities, shape (N, B, C, H, W) in [0, 1].

    The image batch is repeated N times (member-major) and sampled together, so each denoising step is
    one model call of N*B images, or ceil(N*B / max_batch_size) calls when a cap is given.
    ``sampler`` is :func:`ddim_sample` or :func:`ddpm_sample`; ``sampler_options`` go to it (e.g.
    ``respacing``, ``eta``, ``generator``, ``amp_dtype``). Members differ only through their noise.
    """
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    refused = {"noise", "snapshots"} & set(sampler_options)
    if refused:
        raise ValueError(
            f"sample_ensemble draws its own noise and takes no snapshots; remove {sorted(refused)}"
        )
    repeated = image.repeat(members, *([1] * (image.ndim - 1)))
    chunk_size = repeated.shape[0] if max_batch_size is None else max_batch_size
    samples = [
        sampler(diffusion, model, chunk, **sampler_options).sample for chunk in repeated.split(chunk_size)
    ]
    probabilities = signal_to_probability(torch.cat(samples))
    return probabilities.reshape(members, image.shape[0], *probabilities.shape[1:])


def fuse_mean(samples: Tensor) -> Tensor:
    """Average the members' probabilities: (N, B, ...) -> (B, ...)."""
    _check_members(samples)
    return samples.mean(dim=0)


def uncertainty(samples: Tensor, kind: UncertaintyKind = "variance") -> Tensor:
    """Per-pixel disagreement of the members, (N, B, ...) -> (B, ...).

    ``"variance"``: population variance of the member probabilities (0 .. 0.25).
    ``"entropy"``: binary entropy of the mean probability in BITS (0 .. 1; 1 at p = 0.5).
    """
    _check_members(samples)
    if kind == "variance":
        return samples.var(dim=0, correction=0)
    if kind == "entropy":
        mean = samples.mean(dim=0)
        return -(torch.special.xlogy(mean, mean) + torch.special.xlogy(1 - mean, 1 - mean)) / math.log(2.0)
    raise ValueError(f"kind must be 'variance' or 'entropy', got {kind!r}")


def _check_members(samples: Tensor) -> None:
    if samples.ndim < 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must be (N, B, ...) with N >= 1 members, got shape {tuple(samples.shape)}")
