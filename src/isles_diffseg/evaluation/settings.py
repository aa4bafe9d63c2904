"""The evaluation parameters (``params:evaluation``) resolved against a trained run."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from isles_diffseg.diffusion import GaussianDiffusion
from isles_diffseg.evaluation.trained_model import TrainedModel
from isles_diffseg.inference.compiled_denoiser import SamplingFastPath
from isles_diffseg.inference.predict import AMP_DTYPES, SamplerConfig, build_diffusion, sampling_variant


@dataclass
class EvaluationSetup:
    device: torch.device
    amp_dtype: torch.dtype | None
    diffusion: GaussianDiffusion | None
    sampler: SamplerConfig | None
    diffusion_name: str | None
    members: int
    fusion: str
    uncertainty: str
    batch_size: int
    seed: int
    fast_path: SamplingFastPath = field(default_factory=SamplingFastPath)
    prefetch_cases: int = 0
    min_component_ml: float = 0.0


def resolve_setup(evaluation: Mapping[str, Any], trained: TrainedModel, variants: Mapping[str, Any],
                  device: torch.device) -> EvaluationSetup:
    """Sampling follows the training run's diffusion variant unless ``evaluation.diffusion`` names another."""
    amp = evaluation.get("amp", "auto")
    amp_dtype = (torch.bfloat16 if device.type == "cuda" else None) if amp == "auto" else AMP_DTYPES[amp]
    diffusion = sampler = name = None
    discriminative = trained.kind == "discriminative"
    if not discriminative:
        variant = trained.config.diffusion
        name = trained.config.names["diffusion"]
        if evaluation.get("diffusion"):
            name = evaluation["diffusion"]
            variant = sampling_variant(variant, variants.get("diffusion", {}), name, "evaluation.diffusion")
        diffusion, sampler = build_diffusion(variant), SamplerConfig.from_variant(variant)
    return EvaluationSetup(
        device=device, amp_dtype=amp_dtype, diffusion=diffusion, sampler=sampler, diffusion_name=name,
        members=1 if discriminative else int(evaluation.get("members", 5)),
        fusion=str(evaluation.get("fusion", "mean")), uncertainty=str(evaluation.get("uncertainty", "variance")),
        batch_size=int(evaluation.get("batch_size", 64)), seed=int(evaluation.get("seed", 0)),
        fast_path=SamplingFastPath.from_settings(evaluation, device),
        prefetch_cases=int(evaluation.get("prefetch_cases", 2)),
        min_component_ml=min_component_ml(evaluation.get("min_component_ml", 0.0)),
    )


def min_component_ml(setting: Any) -> float:
    """``evaluation.min_component_ml``: a model's native-grid mask loses its connected components under this
    volume (mL), as the Tmax rule's masks do (``baselines.min_component_ml``); 0 keeps every component."""
    try:
        value = float(setting)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(setting, bool) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"evaluation.min_component_ml must be a volume in mL >= 0 (0: keep every component), "
                         f"got {setting!r}")
    return value


def threshold_mode(evaluation: Mapping[str, Any]) -> str:
    """``evaluation.threshold.mode``: ``fixed`` or ``sweep`` (on the validation fold)."""
    mode = (evaluation.get("threshold") or {}).get("mode", "sweep")
    if mode not in ("fixed", "sweep"):
        raise ValueError(f"evaluation.threshold.mode must be 'fixed' or 'sweep', got {mode!r}")
    return mode


# Below this many native voxels in all, scoring is done in this process under ``auto``: starting a pool
# (a fresh interpreter per worker, importing NumPy, SciPy, torch: ~2-3 s) costs more than it saves on small
# volumes such as the CPU demo's, where the whole scoring takes about a second. A realistic ISLES'24 case
# (512 x 512 x ~80 = 21 M voxels) takes ~15 s to score.
POOL_MIN_VOXELS = 10_000_000


def scoring_workers(setting: int | str | None, cases: int, cpus: int | None = None, voxels: int | None = None) -> int:
    """Processes that score cases: ``auto`` = min(cases, CPUs), or 1 when the cases hold under
    :data:`POOL_MIN_VOXELS` voxels in all; an integer as given (1 = in this process)."""
    if setting in (None, "auto"):
        if voxels is not None and voxels < POOL_MIN_VOXELS:
            return 1
        return max(1, min(cases, cpus or os.cpu_count() or 1))
    if isinstance(setting, bool) or not str(setting).isdigit() or int(setting) < 1:
        raise ValueError(f"evaluation.scoring_workers must be auto or an integer >= 1, got {setting!r}")
    return int(setting)
