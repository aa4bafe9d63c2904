"""All per-case metrics of a native-grid prediction against the native ground truth.

The ISLES'24 official set (3D Dice, AVD in mL, lesion-count difference, lesion F1) comes from
:func:`isles24_case_metrics`; 2D slice Dice is computed on axial slices of the canonical (RAS)
orientation, on lesion slices only (``dice_2d_lesion``, the earlier codebase's ``dice_2d_fg``) and on
all slices (``dice_2d_all``). Empty-case conventions are those of :mod:`isles_diffseg.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.metrics import (
    hd95_mm,
    isles24_case_metrics,
    mean_slice_dice,
    voxel_precision,
    voxel_recall,
)


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing_mm: tuple[float, float, float],
                 native: NativeGeometry) -> dict[str, Any]:
    row: dict[str, Any] = dict(isles24_case_metrics(pred, gt, spacing_mm))
    pred_ras, gt_ras = native.to_canonical(pred), native.to_canonical(gt)
    row["dice_2d_lesion"] = mean_slice_dice(pred_ras, gt_ras, axis=2, which="lesion") if gt.any() else float("nan")
    row["dice_2d_all"] = mean_slice_dice(pred_ras, gt_ras, axis=2, which="all")
    row["hd95_mm"] = hd95_mm(pred, gt, spacing_mm)
    row["precision"] = voxel_precision(pred, gt)
    row["recall"] = voxel_recall(pred, gt)
    return row
