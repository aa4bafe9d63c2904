"""The ISLES'24 official per-case metrics, and their summary over a cohort of cases.

The challenge scores each case with ``utils/eval_utils.py`` of ``ezequieldlrosa/isles24``, which calls
the panoptica package. panoptica is not a dependency of this project (its version pins would downgrade
numpy and pandas); this module reimplements the same computation with numpy and cc3d (connected
components), and ``tests/metrics/test_isles_metrics_vs_panoptica.py`` checks it against panoptica:

* **Dice**: one binary Dice over the whole 3D volume (panoptica ``global_bin_dsc``).
* **Absolute volume difference (mL)**: ``|sum(gt) - sum(pred)| * prod(spacing_mm) / 1000``; the
  spacing is the ground truth's header zooms.
* **Absolute lesion-count difference**: ``|#components(gt) - #components(pred)|``.
* **Lesion-wise F1**: panoptica's recognition quality ``rq = TP / (TP + (FP + FN) / 2)`` after
  ``NaiveThresholdMatching``: every (gt, pred) component pair that overlaps gets its IoU; pairs
  are visited in descending IoU order and a pair becomes a match (TP) when its IoU is
  ``>= iou_threshold`` and neither component is matched yet. Unmatched predicted components are
  FP, unmatched ground-truth components FN. This is the same naive greedy threshold matching, not
  an optimal assignment: above IoU 0.5 a match is unique anyway, but at 0.2 one component can clear
  the threshold with two partners and the greedy order decides. Ties in IoU are broken by
  (predicted label, ground-truth label) in raster-scan order, as panoptica's sort does.

Components: ``ConnectedComponentsInstanceApproximator()`` (no backend given) uses cc3d for 3D
inputs, whose default is 26-connectivity (face, edge and corner neighbours). ``connectivity=26`` is
therefore the default here; 6 and 18 are available for sensitivity checks.

Matching threshold: the ISLES'24 evaluation is documented with ``matching_threshold=0.2`` (IoU >= 0.2);
note that one stored revision of ``eval_utils.py`` calls ``NaiveThresholdMatching()`` without an
argument, which is panoptica's default 0.5. ``iou_threshold`` defaults to 0.2 and is a parameter.

Empty-mask conventions (as in ``eval_utils.py``, whose ``empty_value`` is 1.0):

=====================  =====  ==========  ===========  ===========  ===================
case                   Dice   lesion F1   count diff   AVD (mL)     TP / FP / FN
=====================  =====  ==========  ===========  ===========  ===================
both empty             1.0    1.0         0            0.0          0 / 0 / 0
pred empty only        0.0    0.0         #gt          vol(gt)      0 / 0 / #gt
gt empty only          0.0    0.0         #pred        vol(pred)    0 / #pred / 0
=====================  =====  ==========  ===========  ===========  ===================

``aggregate_case_metrics`` summarises per-case rows (these or any other numeric per-case metrics,
e.g. HD95 from :mod:`isles_diffseg.metrics.surface`) by mean, median and sample standard deviation,
ignoring NaN and reporting how many NaN each metric had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from isles_diffseg.metrics.overlap import binary_mask_pair, dice_coefficient
from isles_diffseg.metrics.surface import validated_spacing

ISLES24_IOU_THRESHOLD = 0.2
DEFAULT_CONNECTIVITY = 26
MM3_PER_ML = 1000.0


def connectivity_structure(ndim: int, connectivity: int) -> np.ndarray:
    """Structuring element for ``scipy.ndimage.label`` given the neighbour count (3D: 6, 18, 26; 2D: 4, 8)."""
    structures = {}
    for rank in range(1, ndim + 1):
        structure = ndimage.generate_binary_structure(ndim, rank)
        structures[int(structure.sum()) - 1] = structure
    if connectivity not in structures:
        raise ValueError(
            f"connectivity for {ndim}D masks must be one of {sorted(structures)}, got {connectivity}"
        )
    return structures[connectivity]


def label_lesions(mask: np.ndarray, connectivity: int = DEFAULT_CONNECTIVITY) -> tuple[np.ndarray, int]:
    """Connected components of a bool mask: (label array with 0 = background, number of components).

    3D masks are labelled by cc3d (connected-components-3d, the backend panoptica uses too): the very labels
    ``scipy.ndimage.label`` gives (same numbering, checked in the tests), 10-30x faster on a 512x512x100
    native grid (88 ms vs 2.7 s for a two-lesion mask, 2026-12-01, 2-core machine). 2D masks stay with scipy:
    cc3d numbers 8-connected 2D components in another order, which would change tie-breaking in matching.
    """
    structure = connectivity_structure(mask.ndim, connectivity)  # validates connectivity for every path
    if mask.ndim == 3:
        labels, count = cc3d.connected_components(np.ascontiguousarray(mask, dtype=bool), connectivity=connectivity,
                                                  return_N=True)
        return labels, int(count)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


@dataclass(frozen=True)
class LesionDetection:
    """Outcome of one-to-one lesion matching in one case: matched, spurious and missed components."""

    tp: int
    fp: int
    fn: int

    @property
    def f1(self) -> float:
        """``2TP / (2TP + FP + FN)`` (panoptica ``rq``); 1.0 when there are no lesions on either side."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2.0 * self.tp / denominator if denominator > 0 else 1.0


def _overlapping_pair_ious(
    gt_labels: np.ndarray, n_gt: int, pred_labels: np.ndarray, n_pred: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gt label, pred label, IoU) of every pair of components sharing at least one voxel."""
    both = (gt_labels > 0) & (pred_labels > 0)
    pair_codes = gt_labels[both].astype(np.int64) * (n_pred + 1) + pred_labels[both]
    codes, intersections = np.unique(pair_codes, return_counts=True)
    gt_ids, pred_ids = codes // (n_pred + 1), codes % (n_pred + 1)
    gt_sizes = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    ious = intersections / (gt_sizes[gt_ids] + pred_sizes[pred_ids] - intersections)
    return gt_ids, pred_ids, ious


def match_lesions(
    gt_labels: np.ndarray, n_gt: int, pred_labels: np.ndarray, n_pred: int, iou_threshold: float
) -> LesionDetection:
    """Greedy one-to-one matching by descending IoU (panoptica ``NaiveThresholdMatching``), as counts."""
    gt_ids, pred_ids, ious = _overlapping_pair_ious(gt_labels, n_gt, pred_labels, n_pred)
    # lexsort sorts by its last key first: IoU descending, then pred label, then gt label.
    order = np.lexsort((gt_ids, pred_ids, -ious))
    matched_gt: set[int] = set()
    matched_pred: set[int] = set()
    for index in order:
        if ious[index] < iou_threshold:
            break
        gt_id, pred_id = int(gt_ids[index]), int(pred_ids[index])
        if gt_id in matched_gt or pred_id in matched_pred:
            continue
        matched_gt.add(gt_id)
        matched_pred.add(pred_id)
    tp = len(matched_gt)
    return LesionDetection(tp=tp, fp=n_pred - tp, fn=n_gt - tp)


def _validated_threshold(iou_threshold: float) -> float:
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    return float(iou_threshold)


def _validated_3d_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_mask, gt_mask = binary_mask_pair(pred, gt)
    if pred_mask.ndim != 3:
        raise ValueError(f"ISLES'24 metrics are defined on 3D volumes, got {pred_mask.ndim}D masks")
    return pred_mask, gt_mask


def dice_3d(pred: np.ndarray, gt: np.ndarray) -> float:
    """One global binary Dice over the 3D volume; both empty -> 1.0, one empty -> 0.0."""
    pred_mask, gt_mask = _validated_3d_pair(pred, gt)
    return dice_coefficient(pred_mask, gt_mask)


def _volume_ml(mask: np.ndarray, spacing: np.ndarray) -> float:
    return int(np.count_nonzero(mask)) * float(np.prod(spacing)) / MM3_PER_ML


def absolute_volume_difference_ml(
    pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float] | np.ndarray
) -> float:
    """``|V(gt) - V(pred)|`` in mL, voxel volume ``prod(spacing_mm)`` mm³ (gt header zooms)."""
    pred_mask, gt_mask = _validated_3d_pair(pred, gt)
    spacing = validated_spacing(spacing_mm, 3)
    return abs(_volume_ml(gt_mask, spacing) - _volume_ml(pred_mask, spacing))


def lesion_count_difference(
    pred: np.ndarray, gt: np.ndarray, connectivity: int = DEFAULT_CONNECTIVITY
) -> int:
    """``|#components(gt) - #components(pred)|`` with the given 3D connectivity."""
    pred_mask, gt_mask = _validated_3d_pair(pred, gt)
    return abs(label_lesions(gt_mask, connectivity)[1] - label_lesions(pred_mask, connectivity)[1])


def lesion_f1(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    iou_threshold: float = ISLES24_IOU_THRESHOLD,
    connectivity: int = DEFAULT_CONNECTIVITY,
) -> LesionDetection:
    """Lesion-wise detection counts (TP/FP/FN) and F1 (``.f1``) after one-to-one IoU matching."""
    pred_mask, gt_mask = _validated_3d_pair(pred, gt)
    threshold = _validated_threshold(iou_threshold)
    gt_labels, n_gt = label_lesions(gt_mask, connectivity)
    pred_labels, n_pred = label_lesions(pred_mask, connectivity)
    return match_lesions(gt_labels, n_gt, pred_labels, n_pred, threshold)


def isles24_case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_mm: Sequence[float] | np.ndarray,
    *,
    iou_threshold: float = ISLES24_IOU_THRESHOLD,
    connectivity: int = DEFAULT_CONNECTIVITY,
) -> dict[str, float | int]:
    """The four ISLES'24 ranking metrics of one case, plus the counts they are built from.

    Keys: ``dice``, ``abs_volume_diff_ml``, ``abs_lesion_count_diff``, ``lesion_f1`` (the official
    set); ``lesion_tp``, ``lesion_fp``, ``lesion_fn``, ``n_gt_lesions``, ``n_pred_lesions``,
    ``gt_volume_ml``, ``pred_volume_ml`` (diagnostics).
    """
    pred_mask, gt_mask = _validated_3d_pair(pred, gt)
    spacing = validated_spacing(spacing_mm, 3)
    threshold = _validated_threshold(iou_threshold)
    gt_labels, n_gt = label_lesions(gt_mask, connectivity)
    pred_labels, n_pred = label_lesions(pred_mask, connectivity)
    detection = match_lesions(gt_labels, n_gt, pred_labels, n_pred, threshold)
    gt_volume_ml, pred_volume_ml = _volume_ml(gt_mask, spacing), _volume_ml(pred_mask, spacing)
    return {
        "dice": dice_coefficient(pred_mask, gt_mask),
        "abs_volume_diff_ml": abs(gt_volume_ml - pred_volume_ml),
        "abs_lesion_count_diff": abs(n_gt - n_pred),
        "lesion_f1": detection.f1,
        "lesion_tp": detection.tp,
        "lesion_fp": detection.fp,
        "lesion_fn": detection.fn,
        "n_gt_lesions": n_gt,
        "n_pred_lesions": n_pred,
        "gt_volume_ml": gt_volume_ml,
        "pred_volume_ml": pred_volume_ml,
    }


def _numeric_items(row: Mapping[str, object], row_index: int) -> dict[str, float]:
    """The numeric entries of one row as floats; strings (case ids, names) are skipped."""
    numeric = {}
    for key, value in row.items():
        if isinstance(value, str):
            continue
        if not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"row {row_index}: value of {key!r} is neither numeric nor a string: {value!r}")
        numeric[key] = float(value)
    return numeric


def aggregate_case_metrics(rows: Sequence[Mapping[str, object]]) -> dict[str, float | int]:
    """Cohort summary of per-case metric rows, as one flat dict.

    For every numeric key ``m``: ``m_mean``, ``m_median``, ``m_std`` (sample SD, ``ddof=1``; NaN with
    fewer than two valid values) over the non-NaN values, and ``m_n_nan`` (cases where ``m`` is NaN,
    e.g. HD95 with exactly one empty mask). ``n_cases`` counts rows. String values (case ids) are
    ignored; every row must carry the same numeric keys.
    """
    if not rows:
        raise ValueError("cannot aggregate an empty list of case rows")
    numeric_rows = [_numeric_items(row, index) for index, row in enumerate(rows)]
    metric_names = list(numeric_rows[0])
    for index, numeric in enumerate(numeric_rows):
        if set(numeric) != set(metric_names):
            raise ValueError(
                f"row {index} has numeric keys {sorted(numeric)}, row 0 has {sorted(metric_names)}"
            )
    summary: dict[str, float | int] = {"n_cases": len(rows)}
    for name in metric_names:
        values = np.array([numeric[name] for numeric in numeric_rows])
        valid = values[~np.isnan(values)]
        summary[f"{name}_mean"] = float(valid.mean()) if valid.size else float("nan")
        summary[f"{name}_median"] = float(np.median(valid)) if valid.size else float("nan")
        summary[f"{name}_std"] = float(valid.std(ddof=1)) if valid.size >= 2 else float("nan")
        summary[f"{name}_n_nan"] = int(values.size - valid.size)
    return summary
