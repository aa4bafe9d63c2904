"""Whole-case prediction on the slice-store grid: every brain slice, batched, ensembled and fused.

:func:`predict_cases` fills each model batch with the next (case, slice, member) samples of a list of
cases, across case boundaries, so every call but the last is a full batch (a 10-slice case no longer
costs a 64-sample call of its own), and yields each case as soon as its last sample is done: only the
cases of the batches in flight are held, never a whole fold.

A case's prediction does not depend on the batch size nor on which other cases shared its batches: each
sample's noise is keyed to (seed, case, slice, member) (:mod:`isles_diffseg.inference.keyed_noise`)
rather than drawn from a generator in batch order, and members are fused per case once all are done.
:func:`predict_case` is the same for one case.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.diffusion import (
    GaussianDiffusion,
    fuse_mean,
    signal_to_probability,
    soft_staple,
    uncertainty,
)
from isles_diffseg.diffusion.samplers import ddim_sample, ddpm_sample
from isles_diffseg.inference.compiled_denoiser import FixedBatchModel
from isles_diffseg.inference.keyed_noise import case_key, keyed_normal, sample_keys
from isles_diffseg.inference.predict import SamplerConfig, predict_probabilities
from isles_diffseg.models.kinds import DIFFUSION, DISCRIMINATIVE

FUSIONS = ("mean", "staple")
UNCERTAINTIES = ("variance", "entropy")


@dataclass
class CasePrediction:
    """(Z, S, S) float32 arrays on the slice-store grid; slices without brain are 0."""

    case_id: str
    probability: np.ndarray
    uncertainty: np.ndarray


@dataclass
class _OpenCase:
    """A case whose samples are being predicted: member probabilities gathered on the device."""

    case_id: str
    rows: np.ndarray
    brain: np.ndarray
    slices: np.ndarray  # positions in the case of the slices with brain, the ones predicted
    samples: Tensor | None = None  # (members, len(slices), 1, S, S)
    remaining: int = 0
    key: int = field(init=False)

    def __post_init__(self) -> None:
        self.key = case_key(self.case_id)


@dataclass(frozen=True)
class _Sample:
    case: _OpenCase
    slot: int  # index into case.slices
    member: int


@torch.no_grad()
def predict_cases(
    model: nn.Module | FixedBatchModel,
    store: SliceStore,
    case_ids: Sequence[str],
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
    seed: int = 0,
) -> Iterator[CasePrediction]:
    """Predictions of ``case_ids``, in order, one at a time; ``batch_size`` counts model inputs
    (member samples), whatever case they belong to. A UNet (``kind`` discriminative) predicts once."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if uncertainty_kind not in UNCERTAINTIES:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, got {uncertainty_kind!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if kind == DIFFUSION and (diffusion is None or sampler is None):
        raise ValueError("diffusion models need a diffusion process and a sampler configuration")
    if kind not in (DIFFUSION, DISCRIMINATIVE):
        raise ValueError(f"kind must be 'diffusion' or 'discriminative', got {kind!r}")
    members = max(1, members) if kind == DIFFUSION else 1
    # respaced once here, not in every sampler call (its tables are then copied to the device once)
    chain = diffusion.respaced(sampler.respacing) if kind == DIFFUSION else None
    opened: deque[_OpenCase] = deque()
    pending = _samples(store, case_ids, members, device, store.image_size, opened)
    while batch := list(islice(pending, batch_size)):
        probabilities = _predict_batch(model, store, batch, kind=kind, chain=chain, sampler=sampler, device=device,
                                       amp_dtype=amp_dtype, seed=seed)
        _scatter(batch, probabilities, device)
        while opened and opened[0].remaining == 0:
            yield _finish(opened.popleft(), fusion, uncertainty_kind)
    while opened:  # the last case, and cases without brain met after the last sample
        yield _finish(opened.popleft(), fusion, uncertainty_kind)


def predict_case(model: nn.Module | FixedBatchModel, store: SliceStore, case_id: str, **options: Any) -> CasePrediction:
    """One case: :func:`predict_cases` of ``[case_id]``, with the same keyword options."""
    return next(predict_cases(model, store, [case_id], **options))


def _samples(store: SliceStore, case_ids: Sequence[str], members: int, device: torch.device, size: int,
             opened: deque[_OpenCase]) -> Iterator[_Sample]:
    """Every (case, brain slice, member) sample in order; a case is opened (appended to ``opened``, its
    sample buffer allocated) when its first sample is reached, so only the cases in flight hold memory."""
    for case_id in case_ids:
        rows = store.case_rows(case_id)
        brain = store.brain(rows)
        case = _OpenCase(case_id, rows, brain, np.flatnonzero(brain.reshape(len(rows), -1).any(axis=1)))
        case.remaining = len(case.slices) * members
        case.samples = torch.zeros((members, len(case.slices), 1, size, size), device=device)
        opened.append(case)
        for slot in range(len(case.slices)):
            for member in range(members):
                yield _Sample(case, slot, member)


def _predict_batch(model, store: SliceStore, batch: list[_Sample], *, kind: str, chain: GaussianDiffusion | None,
                   sampler: SamplerConfig | None, device: torch.device, amp_dtype: torch.dtype | None,
                   seed: int) -> Tensor:
    """Probabilities (B, 1, S, S) of one batch of samples."""
    rows = np.array([s.case.rows[s.case.slices[s.slot]] for s in batch])
    unique, inverse = np.unique(rows, return_inverse=True)  # members of a slice read it once
    image = _to_device(torch.from_numpy(store.images(unique)[inverse]), device)
    if kind == DISCRIMINATIVE:
        return predict_probabilities(model, image, kind=kind, amp_dtype=amp_dtype)[0]
    keys = _to_device(sample_keys(seed, torch.tensor([s.case.key for s in batch]),
                                  torch.tensor([int(s.case.slices[s.slot]) for s in batch]),
                                  torch.tensor([s.member for s in batch])), device)
    shape = (len(batch), 1, *image.shape[2:])
    options = {"eta": sampler.eta} if sampler.sampler == "ddim" else {}
    sample_fn = ddim_sample if sampler.sampler == "ddim" else ddpm_sample
    result = sample_fn(chain, model, image, respacing=None, clip_x0=sampler.clip_x0, amp_dtype=amp_dtype,
                       noise=keyed_normal(keys, 0, shape),
                       step_noise=lambda position, noise_shape: keyed_normal(keys, position + 1, noise_shape),
                       **options)
    return signal_to_probability(result.sample)


def _scatter(batch: list[_Sample], probabilities: Tensor, device: torch.device) -> None:
    """Each sample's probability into its case's buffer, one indexed copy per case (no host sync)."""
    start = 0
    while start < len(batch):
        case = batch[start].case
        stop = start
        while stop < len(batch) and batch[stop].case is case:
            stop += 1
        members = _to_device(torch.tensor([s.member for s in batch[start:stop]]), device)
        slots = _to_device(torch.tensor([s.slot for s in batch[start:stop]]), device)
        case.samples[members, slots] = probabilities[start:stop].to(case.samples.dtype)
        case.remaining -= stop - start
        start = stop


def _to_device(host: Tensor, device: torch.device) -> Tensor:
    """A host tensor on ``device`` without waiting for the GPU: a copy from pageable memory would block until
    the work queued before it (the previous batch's sampling) is done; from pinned memory it is queued."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def _finish(case: _OpenCase, fusion: str, uncertainty_kind: str) -> CasePrediction:
    """Fuse the members of a complete case (per case, so STAPLE's iterations do not depend on batching)."""
    probability = np.zeros(case.brain.shape, np.float32)
    spread = np.zeros(case.brain.shape, np.float32)
    samples = case.samples
    if len(case.slices):
        fused = fuse_mean(samples) if fusion == "mean" or samples.shape[0] == 1 else soft_staple(samples)
        probability[case.slices] = fused[:, 0].float().cpu().numpy()
        if samples.shape[0] > 1:
            spread[case.slices] = uncertainty(samples, uncertainty_kind)[:, 0].float().cpu().numpy()
    case.samples = None
    inside = case.brain > 0
    return CasePrediction(case.case_id, probability * inside, spread * inside)
