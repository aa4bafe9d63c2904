"""Segmentation metrics on binary masks of the native grid (numpy/scipy only, no Kedro).

* :mod:`~isles_diffseg.metrics.isles`: the ISLES'24 official per-case set (3D Dice, absolute volume
  difference in mL, absolute lesion-count difference, lesion-wise F1) and the cohort summary.
* :mod:`~isles_diffseg.metrics.overlap`: voxel Dice, precision, recall and 2D slice-wise Dice.
* :mod:`~isles_diffseg.metrics.surface`: HD95 in millimetres.
* :mod:`~isles_diffseg.metrics.threshold_selection`: the probability threshold chosen on validation cases
  (the evaluation's sweep, and training's validation when ``training.val_thresholds`` is set).

Each module states its empty-mask conventions in a table in its docstring.
"""

from isles_diffseg.metrics.isles import (
    LesionDetection,
    absolute_volume_difference_ml,
    aggregate_case_metrics,
    dice_3d,
    isles24_case_metrics,
    label_lesions,
    lesion_count_difference,
    lesion_f1,
)
from isles_diffseg.metrics.overlap import (
    as_binary_mask,
    dice_coefficient,
    mean_slice_dice,
    slice_dice_scores,
    voxel_precision,
    voxel_recall,
)
from isles_diffseg.metrics.surface import hd95_mm

__all__ = [
    "LesionDetection",
    "absolute_volume_difference_ml",
    "aggregate_case_metrics",
    "as_binary_mask",
    "dice_3d",
    "dice_coefficient",
    "hd95_mm",
    "isles24_case_metrics",
    "label_lesions",
    "lesion_count_difference",
    "lesion_f1",
    "mean_slice_dice",
    "slice_dice_scores",
    "voxel_precision",
    "voxel_recall",
]
