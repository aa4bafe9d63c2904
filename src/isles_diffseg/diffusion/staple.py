"""Soft STAPLE: expectation-maximisation consensus of probabilistic segmentations.

Warfield et al. (2004) STAPLE, with each member's soft decision d in [0, 1] counted fractionally:
member j has sensitivity p_j = P(d=1 | T=1) and specificity q_j = P(d=0 | T=0); the hidden truth T has
foreground prior pi. The E-step gives the posterior W = P(T=1 | decisions) per pixel,

    logit W = logit pi + sum_j [ d_j log(p_j / (1 - q_j)) + (1 - d_j) log((1 - p_j) / q_j) ],

the M-step p_j = sum W d_j / sum W, q_j = sum (1 - W)(1 - d_j) / sum (1 - W) and pi = mean W.
Each image of the batch gets its own p, q and pi (sums run over its channel and spatial dims).
Iteration starts from W = the members' mean, so the first prior is the mean foreground fraction.
Re-estimating pi matters: a prior frozen at the members' mean keeps their false positives in the
consensus even when one member is perfect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class StapleResult:
    """Fused probability (B, ...), per-member-per-image sensitivity/specificity (N, B), prior (B,)."""

    probability: Tensor
    sensitivity: Tensor
    specificity: Tensor
    prior: Tensor
    iterations: int
    converged: bool


def soft_staple_em(samples: Tensor, max_iter: int = 50, tol: float = 1e-5, eps: float = 1e-6) -> StapleResult:
    """Run soft STAPLE on member probabilities (N, B, ...) until max |dW| < tol or ``max_iter`` iterations.

    ``eps`` keeps p, q and pi inside (0, 1) so that unanimous or empty inputs stay finite.
    """
    if samples.ndim < 3:
        raise ValueError(
            f"samples must be (N, B, ...) with at least one pixel dim, got {tuple(samples.shape)}"
        )
    if max_iter < 1 or tol < 0 or not 0 < eps < 0.5:
        raise ValueError(f"need max_iter >= 1, tol >= 0 and 0 < eps < 0.5; got {max_iter}, {tol}, {eps}")
    if samples.numel() and (bool(samples.min() < 0) or bool(samples.max() > 1)):
        raise ValueError("member probabilities must lie in [0, 1]")
    decisions = samples.to(torch.promote_types(samples.dtype, torch.float32))
    pixel_dims = tuple(range(2, decisions.ndim))
    per_pixel = (1,) * len(pixel_dims)  # trailing singleton dims broadcasting a per-image value over pixels

    posterior = decisions.mean(dim=0)
    iterations, converged = 0, False
    while iterations < max_iter and not converged:
        iterations += 1
        sensitivity, specificity, prior = _maximisation(decisions, posterior, pixel_dims, eps)
        p = sensitivity.reshape(*sensitivity.shape, *per_pixel)
        q = specificity.reshape(*specificity.shape, *per_pixel)
        evidence = decisions * torch.log(p / (1 - q)) + (1 - decisions) * torch.log((1 - p) / q)
        updated = torch.sigmoid(torch.logit(prior).reshape(-1, *per_pixel) + evidence.sum(dim=0))
        change = (updated - posterior).abs().max().item() if updated.numel() else 0.0
        posterior, converged = updated, change < tol
    return StapleResult(posterior, sensitivity, specificity, prior, iterations, converged)


def soft_staple(samples: Tensor, max_iter: int = 50, tol: float = 1e-5) -> Tensor:
    """Soft STAPLE consensus probability (B, ...) of member probabilities (N, B, ...)."""
    return soft_staple_em(samples, max_iter=max_iter, tol=tol).probability


def _maximisation(
    decisions: Tensor, posterior: Tensor, pixel_dims: tuple[int, ...], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Sensitivities and specificities (N, B) and priors (B,) that maximise the expected log-likelihood."""
    foreground, background = posterior.unsqueeze(0), 1 - posterior.unsqueeze(0)
    sensitivity = (foreground * decisions).sum(pixel_dims) / foreground.sum(pixel_dims).clamp_min(eps)
    specificity = (background * (1 - decisions)).sum(pixel_dims) / background.sum(pixel_dims).clamp_min(eps)
    prior = posterior.mean(dim=tuple(d - 1 for d in pixel_dims))
    return sensitivity.clamp(eps, 1 - eps), specificity.clamp(eps, 1 - eps), prior.clamp(eps, 1 - eps)
