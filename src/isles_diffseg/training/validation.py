"""Validation during training: sample the validation cases slice by slice, score them per patient.

The selection metric is the per-patient 3D Dice of the reassembled slice stack (on the slice-store
grid, fast enough to run every few thousand steps); the 2D Dice over lesion slices (the earlier
codebase's ``dice_2d_fg``) is reported beside it. Native-grid ISLES'24 metrics are the evaluation
pipeline's job.

With ``thresholds`` (``training.val_thresholds``) the 3D Dice is also swept over those thresholds on the
validation cases, as the evaluation pipeline chooses its threshold: ``val_dice_3d_swept`` at the best one
(``val_threshold_swept``). The trainer then selects checkpoints on it. Why: on the GPU folds the 3D Dice at
0.5 of one DDIM-10 sample ordered pairs of runs as their test Dice did in 10 of 18 pairs (chance), the swept
Dice of the evaluation's chain in 15 of 18 (``benchmarks/learning/README.md``, rounds 9-15). The other
metrics stay at the fixed ``threshold``.

Beside the Dice, validation records what a user needs when a run does not learn:

* lesion volumes, predicted and true, per case (``pred_pixels``, ``gt_pixels``). They stay in pixels of
  the slice-store grid because the store keeps no voxel spacing (:class:`SliceGeometry` only knows the
  padding and resampling), so millilitres cannot be computed here;
* per-case histograms of the predicted probability over brain pixels, inside and outside the true
  lesion (``hist_lesion``, ``hist_background``);
* for diffusion models, the x_0 estimates along one sampling chain of each example slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.diffusion import GaussianDiffusion, signal_to_probability
from isles_diffseg.inference.case_prediction import predict_cases
from isles_diffseg.inference.compiled_denoiser import SamplingFastPath
from isles_diffseg.inference.predict import SamplerConfig, sampling_call
from isles_diffseg.metrics import dice_coefficient, mean_slice_dice
from isles_diffseg.metrics.threshold_selection import best_threshold, case_dice_by_threshold, sweep_table

# Fixed bins so that per-case counts add up across cases and ranks.
PROBABILITY_BIN_EDGES = np.linspace(0.0, 1.0, 21)
CHAIN_SNAPSHOTS = 6
PER_CASE_COLUMNS = ["case_id", "dice_3d", "dice_2d_lesion", "dice_2d_all", "gt_pixels", "pred_pixels",
                    "hist_lesion", "hist_background", "dice_3d_by_threshold"]


@dataclass
class ValidationResult:
    """Per-case rows, their summary, and example slices for figures.

    Everything logged as a number or a cohort figure is derived from ``per_case``, because the trainer
    gathers only ``per_case`` from the ranks and rebuilds the result from it. The probability histograms
    are therefore per-case list columns (``hist_lesion``, ``hist_background``: counts in the bins of
    :data:`PROBABILITY_BIN_EDGES`): object columns pass through ``pd.concat`` of the ranks' frames
    unchanged, whereas counts inside ``examples`` would cover only the main rank's few example cases.
    ``examples`` holds per-slice arrays (``image``, ``gt``, ``prob``, ``uncertainty`` and, for diffusion
    models, ``chain_x0`` (S, H, W) with ``chain_timesteps``); only the main rank fills it.
    """

    per_case: pd.DataFrame
    metrics: dict[str, float]
    examples: list[dict[str, Any]] = field(default_factory=list)


def select_validation_cases(candidates: pd.DataFrame, max_cases: int | None) -> list[str]:
    """Up to ``max_cases`` cases spread evenly over the lesion-volume range (smallest to largest)."""
    ordered = candidates.sort_values(["lesion_volume_ml", "case_id"])["case_id"].tolist()
    if max_cases is None or max_cases >= len(ordered):
        return ordered
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, max_cases)).astype(int))
    return [ordered[i] for i in picks]


@torch.no_grad()
def validate(
    model: nn.Module,
    store: SliceStore,
    case_ids: list[str],
    *,
    kind: str,
    diffusion: GaussianDiffusion | None,
    sampler: SamplerConfig | None,
    device: torch.device,
    batch_size: int = 64,
    members: int = 1,
    amp_dtype: torch.dtype | None = None,
    seed: int = 0,
    n_examples: int = 0,
    threshold: float = 0.5,
    thresholds: Sequence[float] | None = None,
    fast_path: SamplingFastPath | None = None,
) -> ValidationResult:
    """Per-case Dice, volumes and probability histograms; slices without brain are predicted empty.

    ``n_examples`` example slices (the largest-lesion slice of the first cases) are kept for figures;
    for a diffusion model each is sampled once more to record its chain of x_0 estimates. The cases are
    sampled in batches across cases; ``fast_path`` (evaluation's sampling fast path) compiles the network.
    """
    # The validation samples' noise is keyed to (seed, case, slice, member); the chains draw from a generator
    # of their own, so asking for examples (main rank only) does not change the metrics.
    chain_generator = torch.Generator(device).manual_seed(seed)
    was_training = model.training
    model.eval()
    rows_out, examples = [], []
    sampling_model = fast_path.wrap(model, batch_size) if fast_path is not None else model
    for prediction in predict_cases(sampling_model, store, case_ids, kind=kind, diffusion=diffusion, sampler=sampler,
                                    device=device, members=members, batch_size=batch_size, amp_dtype=amp_dtype,
                                    seed=seed):
        case_id = prediction.case_id
        rows = store.case_rows(case_id)
        gt = store.masks(rows)
        brain = store.brain(rows) > 0
        pred = (prediction.probability >= threshold).astype(np.uint8)
        hist_lesion, hist_background = probability_counts(prediction.probability, gt > 0, brain)
        rows_out.append({
            "case_id": case_id,
            "dice_3d": dice_coefficient(pred, gt),
            "dice_2d_lesion": mean_slice_dice(pred, gt, axis=0, which="lesion") if gt.any() else np.nan,
            "dice_2d_all": mean_slice_dice(pred, gt, axis=0, which="all"),
            "gt_pixels": int(gt.sum()),
            "pred_pixels": int(pred.sum()),
            "hist_lesion": hist_lesion,
            "hist_background": hist_background,
            # a list per case (like the histograms) so that it survives the trainer's gather of rank frames
            "dice_3d_by_threshold": (case_dice_by_threshold(prediction.probability, gt, thresholds)
                                     if thresholds else None),
        })
        if len(examples) < n_examples:
            z = int(np.argmax(gt.reshape(len(rows), -1).sum(1))) if gt.any() else len(rows) // 2
            image = store.images([rows[z]])
            example: dict[str, Any] = {"case_id": case_id, "image": image[0], "gt": gt[z],
                                       "prob": prediction.probability[z], "uncertainty": prediction.uncertainty[z]}
            if kind == "diffusion":  # predict_case has already refused a missing diffusion or sampler
                chain, timesteps = denoising_chain(model, torch.from_numpy(image).to(device), diffusion=diffusion,
                                                   sampler=sampler, amp_dtype=amp_dtype, generator=chain_generator)
                # masked like the case prediction, so the last panel is comparable with ``prob``
                example["chain_x0"], example["chain_timesteps"] = chain[:, 0] * brain[z], timesteps
            examples.append(example)
    model.train(was_training)
    per_case = pd.DataFrame(rows_out, columns=PER_CASE_COLUMNS)
    return ValidationResult(per_case, summarise_validation(per_case, thresholds), examples)


def probability_counts(probability: np.ndarray, lesion: np.ndarray, brain: np.ndarray) -> tuple[list[int], list[int]]:
    """Counts of the brain pixels' probabilities in :data:`PROBABILITY_BIN_EDGES`: (in lesion, outside).

    Plain lists of ints, so that they stay one cell of a DataFrame row and write readably to CSV.
    """
    inside, outside = probability[brain & lesion], probability[brain & ~lesion]
    return ([int(n) for n in np.histogram(inside, PROBABILITY_BIN_EDGES)[0]],
            [int(n) for n in np.histogram(outside, PROBABILITY_BIN_EDGES)[0]])


def summed_counts(per_case: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The probability histograms of all cases added up: (in lesion, outside)."""

    def total(column: str) -> np.ndarray:
        counts = np.zeros(len(PROBABILITY_BIN_EDGES) - 1, np.int64)
        for case_counts in per_case[column]:
            counts += np.asarray(case_counts, np.int64)
        return counts

    return total("hist_lesion"), total("hist_background")


@torch.no_grad()
def denoising_chain(
    model: nn.Module,
    image: torch.Tensor,
    *,
    diffusion: GaussianDiffusion,
    sampler: SamplerConfig,
    amp_dtype: torch.dtype | None,
    generator: torch.Generator,
    snapshots: int = CHAIN_SNAPSHOTS,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """x_0 estimates of one sampling run as probabilities (S, B, H, W), noisiest first, and their timesteps."""
    sample_fn, options = sampling_call(sampler, amp_dtype, generator)
    result = sample_fn(diffusion, model, image, snapshots=snapshots, **options)
    return signal_to_probability(result.snapshots_x0[:, :, 0]).float().cpu().numpy(), result.snapshot_timesteps


def summarise_validation(per_case: pd.DataFrame, thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """Means over cases; the lesion-slice Dice ignores cases without a lesion.

    With ``thresholds`` (those ``dice_3d_by_threshold`` was computed at), also the best mean 3D Dice over
    them and its threshold (ties go to the one closest to 0.5, as in the evaluation's sweep).

    The volume numbers separate the two usual failures of a run that does not learn: predicting empty
    masks (``val_empty_predictions`` counts lesion cases predicted empty; the bias goes to minus the
    mean true volume) and predicting scattered noise (a large positive bias).
    """
    lesion = per_case["dice_2d_lesion"].dropna()
    error = per_case["pred_pixels"] - per_case["gt_pixels"]
    summary = {
        "val_dice_3d": float(per_case["dice_3d"].mean()),
        "val_dice_2d_lesion": float(lesion.mean()) if len(lesion) else float("nan"),
        "val_dice_2d_all": float(per_case["dice_2d_all"].mean()),
        "val_volume_abs_error_pixels": float(error.abs().mean()),
        "val_volume_bias_pixels": float(error.mean()),
        "val_empty_predictions": float(((per_case["gt_pixels"] > 0) & (per_case["pred_pixels"] == 0)).sum()),
    }
    if thresholds:
        sweep = sweep_table(thresholds, per_case["dice_3d_by_threshold"].tolist())
        chosen = best_threshold(sweep)
        summary["val_dice_3d_swept"] = float(sweep.loc[sweep["threshold"] == chosen, "mean_dice_3d"].iloc[0])
        summary["val_threshold_swept"] = chosen
    return summary
