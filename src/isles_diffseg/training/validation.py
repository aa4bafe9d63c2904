"""Validation during training: sample the validation cases slice by slice, score them per patient.

The selection metric is the per-patient 3D Dice of the reassembled slice stack (on the slice-store
grid, fast enough to run every few thousand steps); the 2D Dice over lesion slices (the earlier
codebase's ``dice_2d_fg``) is reported beside it. Native-grid ISLES'24 metrics are the evaluation
pipeline's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.diffusion import GaussianDiffusion
from isles_diffseg.inference.case_prediction import predict_case
from isles_diffseg.inference.predict import SamplerConfig
from isles_diffseg.metrics import dice_coefficient, mean_slice_dice


@dataclass
class ValidationResult:
    per_case: pd.DataFrame
    metrics: dict[str, float]
    examples: list[dict[str, np.ndarray]] = field(default_factory=list)


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
) -> ValidationResult:
    """Per-case Dice (3D stack and 2D lesion slices); slices without brain are predicted empty."""
    generator = torch.Generator(device).manual_seed(seed)
    was_training = model.training
    model.eval()
    rows_out, examples = [], []
    for case_id in case_ids:
        rows = store.case_rows(case_id)
        gt = store.masks(rows)
        prediction = predict_case(model, store, case_id, kind=kind, diffusion=diffusion, sampler=sampler,
                                  device=device, members=members, batch_size=batch_size, amp_dtype=amp_dtype,
                                  generator=generator)
        pred = (prediction.probability >= threshold).astype(np.uint8)
        rows_out.append({
            "case_id": case_id,
            "dice_3d": dice_coefficient(pred, gt),
            "dice_2d_lesion": mean_slice_dice(pred, gt, axis=0, which="lesion") if gt.any() else np.nan,
            "dice_2d_all": mean_slice_dice(pred, gt, axis=0, which="all"),
            "gt_pixels": int(gt.sum()),
            "pred_pixels": int(pred.sum()),
        })
        if len(examples) < n_examples:
            z = int(np.argmax(gt.reshape(len(rows), -1).sum(1))) if gt.any() else len(rows) // 2
            examples.append({"case_id": case_id, "image": store.images([rows[z]])[0], "gt": gt[z],
                             "prob": prediction.probability[z], "uncertainty": prediction.uncertainty[z]})
    model.train(was_training)
    per_case = pd.DataFrame(rows_out, columns=["case_id", "dice_3d", "dice_2d_lesion", "dice_2d_all",
                                               "gt_pixels", "pred_pixels"])
    return ValidationResult(per_case, summarise_validation(per_case), examples)


def summarise_validation(per_case: pd.DataFrame) -> dict[str, float]:
    """Means over cases; the lesion-slice Dice ignores cases without a lesion."""
    lesion = per_case["dice_2d_lesion"].dropna()
    return {
        "val_dice_3d": float(per_case["dice_3d"].mean()),
        "val_dice_2d_lesion": float(lesion.mean()) if len(lesion) else float("nan"),
        "val_dice_2d_all": float(per_case["dice_2d_all"].mean()),
    }
