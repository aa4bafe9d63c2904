"""Whole-case prediction on the slice-store grid: every brain slice, batched, ensembled and fused."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.diffusion import GaussianDiffusion, fuse_mean, soft_staple, uncertainty
from isles_diffseg.inference.predict import SamplerConfig, predict_probabilities

FUSIONS = ("mean", "staple")
UNCERTAINTIES = ("variance", "entropy")


@dataclass
class CasePrediction:
    """(Z, S, S) float32 arrays on the slice-store grid; slices without brain are 0."""

    case_id: str
    probability: np.ndarray
    uncertainty: np.ndarray


@torch.no_grad()
def predict_case(
    model: nn.Module,
    store: SliceStore,
    case_id: str,
    *,
    kind: str,
    diffusion: GaussianDiffusion | None,
    sampler: SamplerConfig | None,
    device: torch.device,
    members: int = 1,
    fusion: str = "mean",
    uncertainty_kind: str = "variance",
    batch_size: int = 64,
    amp_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> CasePrediction:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if uncertainty_kind not in UNCERTAINTIES:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, got {uncertainty_kind!r}")
    rows = store.case_rows(case_id)
    brain = store.brain(rows)
    probability = np.zeros(brain.shape, np.float32)
    spread = np.zeros(brain.shape, np.float32)
    todo = rows[brain.reshape(len(rows), -1).any(axis=1)]
    # batch_size counts model inputs, so an ensemble of N members takes batch_size // N slices at a time
    slices_per_call = max(1, batch_size // max(1, members)) if kind == "diffusion" else batch_size
    for start in range(0, len(todo), slices_per_call):
        chunk = todo[start : start + slices_per_call]
        image = torch.from_numpy(store.images(chunk)).to(device)
        samples = predict_probabilities(model, image, kind=kind, diffusion=diffusion, sampler=sampler,
                                        members=members, amp_dtype=amp_dtype, generator=generator)
        fused = fuse_mean(samples) if fusion == "mean" or samples.shape[0] == 1 else soft_staple(samples)
        where = chunk - rows[0]
        probability[where] = fused[:, 0].float().cpu().numpy()
        if samples.shape[0] > 1:
            spread[where] = uncertainty(samples, uncertainty_kind)[:, 0].float().cpu().numpy()
    probability *= brain > 0
    return CasePrediction(case_id, probability, spread * (brain > 0))
