"""Training objectives, built from ``conf/base/variants/loss/<name>.yml``.

Diffusion losses (``kind: diffusion``) start from the per-sample MSE of
:meth:`GaussianDiffusion.training_terms` and may add, on the model's x0 estimate:

- soft Dice and BCE, read as logits ``aux_logit_scale * x0`` (x0 = +-1 is a confident 1/0) so
  their gradients never die on a clamp; each sample is weighted by alpha_bar(t), the signal
  fraction of x_t. At very noisy steps x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) amplifies errors by up
  to ~1/sqrt(ab) (10^2 for the cosine schedule), which is what blew up the earlier auxiliary
  gradients; the alpha_bar weight bounds that factor by sqrt(ab (1 - ab)) <= 1/2. The auxiliary
  weight ramps in linearly over ``aux_warmup_steps``;
- BCE-with-logits on a calibration head's logits (``org_medsegdiff``), unclamped.

``timestep_power`` p > 1 draws training timesteps as t = floor(T u^(1/p)), u ~ U(0, 1) (density
proportional to t^(p-1)): more of the batch at the noisy end, where x_t shows little of the mask and the
model has to read the image, i.e. where segmentation is learned; at the clean end it only copies x_t.
p = 1 is the usual uniform draw.

``foreground_weight`` w > 1 weights the MSE of lesion pixels w times a background pixel's (per-sample
weighted mean): with x0 prediction a lesion covering 1 % of a 256-px slice otherwise barely moves the
MSE, and predicting background everywhere is nearly optimal. Every diffusion loss also reports the MSE
per timestep bucket (``mse_by_t_sum`` / ``mse_by_t_count``, quarters of the process), which is how a
user sees whether a run fails at the noisy or at the nearly clean end.

The discriminative loss (``kind: discriminative``) is soft Dice + BCE on a segmentation UNet's logits.
Dice is computed per sample, then averaged (never one Dice over the whole batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from isles_diffseg.diffusion import GaussianDiffusion
from isles_diffseg.diffusion.gaussian import TrainingTerms

_DIFFUSION_KEYS = {"kind", "name", "description", "token", "mse_weight", "dice_weight", "bce_weight",
                   "aux_warmup_steps", "aux_logit_scale", "noise_weighting", "calibration_weight", "dice_smooth",
                   "foreground_weight", "timestep_power"}
_DISCRIMINATIVE_KEYS = {"kind", "name", "description", "token", "dice_weight", "bce_weight", "dice_smooth"}
TIMESTEP_BUCKETS = 4  # the per-timestep MSE is reported for each quarter of the diffusion process


def soft_dice_per_sample(probabilities: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice for each sample of a (B, ...) batch, shape (B,)."""
    p, g = probabilities.flatten(1), target.flatten(1)
    dice = (2 * (p * g).sum(1) + smooth) / (p.sum(1) + g.sum(1) + smooth)
    return 1 - dice


def _check_keys(config: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"loss variant {config.get('name', '?')!r}: unknown keys {sorted(unknown)}")


@dataclass(frozen=True)
class DiffusionLoss:
    """MSE on the diffusion target plus optional x0 auxiliaries and a calibration term."""

    mse_weight: float = 1.0
    dice_weight: float = 0.0
    bce_weight: float = 0.0
    aux_warmup_steps: int = 0
    aux_logit_scale: float = 4.0
    noise_weighting: str = "alpha_bar"  # alpha_bar | none
    calibration_weight: float = 0.0
    dice_smooth: float = 1.0
    foreground_weight: float = 1.0
    timestep_power: float = 1.0

    kind = "diffusion"

    def __post_init__(self) -> None:
        if self.foreground_weight < 1.0:
            raise ValueError(f"foreground_weight must be >= 1 (1 = plain MSE), got {self.foreground_weight}")
        if self.timestep_power < 1.0:
            raise ValueError(f"timestep_power must be >= 1 (1 = uniform timesteps), got {self.timestep_power}")

    def sample_timesteps(self, batch: int, num_timesteps: int, device: torch.device,
                         generator: torch.Generator | None = None) -> Tensor:
        """Training timesteps (B,) in [0, T): uniform for p = 1, skewed towards T for p > 1."""
        if self.timestep_power == 1.0:
            return torch.randint(0, num_timesteps, (batch,), device=device, generator=generator)
        u = torch.rand(batch, device=device, generator=generator)
        return (num_timesteps * u.pow(1.0 / self.timestep_power)).long().clamp_max(num_timesteps - 1)

    def aux_ramp(self, step: int) -> float:
        if self.aux_warmup_steps <= 0:
            return 1.0
        return min(1.0, step / self.aux_warmup_steps)

    def __call__(self, terms: TrainingTerms, mask: Tensor, diffusion: GaussianDiffusion, step: int) -> dict[str, Tensor]:
        """Loss components (scalars); ``loss`` is the weighted total that is back-propagated."""
        per_sample = terms["mse"]
        if self.foreground_weight != 1.0:
            weight = 1.0 + (self.foreground_weight - 1.0) * mask.flatten(1)
            squared = (terms["model_output"] - terms["target"]).pow(2).flatten(1)
            per_sample = (weight * squared).sum(1) / weight.sum(1)
        out = {"mse": per_sample.mean()}
        total = self.mse_weight * out["mse"]
        bucket = (terms["t"] * TIMESTEP_BUCKETS // diffusion.num_timesteps).clamp_max(TIMESTEP_BUCKETS - 1)
        count = torch.zeros(TIMESTEP_BUCKETS, device=per_sample.device)
        out["mse_by_t_count"] = count.index_add(0, bucket, torch.ones_like(per_sample.float()))
        out["mse_by_t_sum"] = count.index_add(0, bucket, per_sample.detach().float())
        if self.dice_weight or self.bce_weight:
            weight = (
                diffusion.alpha_bar(terms["t"]) if self.noise_weighting == "alpha_bar"
                else torch.ones_like(terms["mse"])
            )
            logits = self.aux_logit_scale * terms["pred_x0"].float()
            bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none").flatten(1).mean(1)
            dice = soft_dice_per_sample(torch.sigmoid(logits), mask, self.dice_smooth)
            out["aux_dice"] = (weight * dice).mean()
            out["aux_bce"] = (weight * bce).mean()
            ramp = self.aux_ramp(step)
            out["aux_ramp"] = torch.tensor(ramp)
            total = total + ramp * (self.dice_weight * out["aux_dice"] + self.bce_weight * out["aux_bce"])
        if self.calibration_weight:
            if "calibration_logits" not in terms["extras"]:
                raise ValueError("loss needs a calibration head, but the model returned no 'calibration_logits'")
            calibration = terms["extras"]["calibration_logits"].float()
            out["calibration_bce"] = F.binary_cross_entropy_with_logits(calibration, mask)
            total = total + self.calibration_weight * out["calibration_bce"]
        out["loss"] = total
        return out


@dataclass(frozen=True)
class SegmentationLoss:
    """Soft Dice + BCE on logits, for the deterministic baseline."""

    dice_weight: float = 1.0
    bce_weight: float = 1.0
    dice_smooth: float = 1.0

    kind = "discriminative"

    def __call__(self, logits: Tensor, mask: Tensor) -> dict[str, Tensor]:
        logits = logits.float()
        out = {
            "dice": soft_dice_per_sample(torch.sigmoid(logits), mask, self.dice_smooth).mean(),
            "bce": F.binary_cross_entropy_with_logits(logits, mask),
        }
        out["loss"] = self.dice_weight * out["dice"] + self.bce_weight * out["bce"]
        return out


def timestep_bucket_metrics(sums: torch.Tensor | None, counts: torch.Tensor | None,
                            diffusion: GaussianDiffusion | None) -> dict[str, float]:
    """``train_mse_by_t/<first>-<last>``: the window's mean MSE per timestep bucket (empty buckets omitted)."""
    if sums is None or counts is None or diffusion is None:
        return {}
    steps, buckets = diffusion.num_timesteps, len(sums)
    edges = [-(-k * steps // buckets) for k in range(buckets + 1)]  # ceil(k T / K): first t with t * K // T == k
    return {f"train_mse_by_t/{lo:04d}-{hi - 1:04d}": float(s / c)
            for lo, hi, s, c in zip(edges[:-1], edges[1:], sums.tolist(), counts.tolist(), strict=True) if c > 0}


def build_loss(config: Mapping[str, Any]) -> DiffusionLoss | SegmentationLoss:
    kind = config.get("kind")
    drop = {"kind", "name", "description", "token"}
    if kind == "diffusion":
        _check_keys(config, _DIFFUSION_KEYS)
        if config.get("noise_weighting", "alpha_bar") not in ("alpha_bar", "none"):
            raise ValueError(f"noise_weighting must be 'alpha_bar' or 'none', got {config['noise_weighting']!r}")
        return DiffusionLoss(**{k: v for k, v in config.items() if k not in drop})
    if kind == "discriminative":
        _check_keys(config, _DISCRIMINATIVE_KEYS)
        return SegmentationLoss(**{k: v for k, v in config.items() if k not in drop})
    raise ValueError(f"loss variant {config.get('name', '?')!r}: kind must be 'diffusion' or 'discriminative', got {kind!r}")
