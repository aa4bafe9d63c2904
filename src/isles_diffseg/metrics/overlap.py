"""Voxel-overlap scores of a binary prediction against a binary ground truth: Dice, precision, recall.

All scores are computed exactly (no smoothing constant), and every ratio whose denominator is
zero follows an explicit convention instead of an epsilon. The earlier codebase smoothed with
``1e-6`` and thereby scored correctly-empty slices as 0 for precision/recall/F1; here a correctly
empty prediction is never penalised.

Empty-mask conventions (P = predicted voxels, G = ground-truth voxels):

======================  =====  =========  ======  =======================================
case                    Dice   precision  recall  reasoning
======================  =====  =========  ======  =======================================
P empty, G empty        1.0    1.0        1.0     nothing to find and nothing claimed
P non-empty, G empty    0.0    0.0        1.0     all of P is false; nothing was missed
P empty, G non-empty    0.0    1.0        0.0     all of G is missed; nothing is false
both non-empty          ordinary ratios 2|P∩G|/(|P|+|G|), |P∩G|/|P|, |P∩G|/|G|
======================  =====  =========  ======  =======================================

The vacuous ratios (recall without ground truth, precision without prediction) are 1.0 so that
precision only ever counts false voxels and recall only ever counts missed voxels. An empty
prediction therefore has precision 1.0: read precision together with recall or Dice.

Slice-wise Dice (``slice_dice_scores`` / ``mean_slice_dice``) applies the same Dice convention to each
2D slice. ``which="lesion"`` averages only the slices whose ground truth has foreground; it reproduces
the earlier codebase's ``dice_2d_fg`` (up to its ``1e-6`` smoothing) so numbers compare with its 7 %,
but it is blind to false positives on lesion-free slices. ``which="all"`` averages every slice and
scores such false positives as 0, correctly empty slices as 1.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SliceSelection = Literal["lesion", "all"]


def as_binary_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """Return ``mask`` as a bool array; raise ``ValueError`` unless every value is 0/1 (or False/True).

    Probabilities or label maps must be thresholded by the caller: silently binarising them at an
    arbitrary cut (> 0 here, > 0.5 there) is what made the earlier metrics disagree with each other.
    """
    array = np.asarray(mask)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be a numeric or boolean array, got dtype {array.dtype}")
    if not ((array == 0) | (array == 1)).all():
        raise ValueError(f"{name} must be binary (only 0 and 1); threshold it before computing metrics")
    return array.astype(bool)


def binary_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (prediction, ground truth) pair: same shape, both binary; return them as bool arrays."""
    pred_mask = as_binary_mask(pred, "pred")
    gt_mask = as_binary_mask(gt, "gt")
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"pred and gt shapes differ: {pred_mask.shape} vs {gt_mask.shape}")
    return pred_mask, gt_mask


def _ratio_or(numerator: int, denominator: int, empty_value: float) -> float:
    """``numerator / denominator``, or ``empty_value`` when the denominator is zero."""
    return float(numerator) / denominator if denominator > 0 else empty_value


def dice_coefficient(pred: np.ndarray, gt: np.ndarray) -> float:
    """Binary Dice ``2|P∩G| / (|P|+|G|)`` over all voxels of any-dimensional masks; both empty -> 1.0."""
    pred_mask, gt_mask = binary_mask_pair(pred, gt)
    intersection = int(np.count_nonzero(pred_mask & gt_mask))
    total = int(np.count_nonzero(pred_mask)) + int(np.count_nonzero(gt_mask))
    return _ratio_or(2 * intersection, total, empty_value=1.0)


def voxel_precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """``|P∩G| / |P|``; an empty prediction claims nothing false and scores 1.0 (see module table)."""
    pred_mask, gt_mask = binary_mask_pair(pred, gt)
    return _ratio_or(int(np.count_nonzero(pred_mask & gt_mask)), int(np.count_nonzero(pred_mask)), 1.0)


def voxel_recall(pred: np.ndarray, gt: np.ndarray) -> float:
    """``|P∩G| / |G|``; an empty ground truth leaves nothing to miss and scores 1.0 (see module table)."""
    pred_mask, gt_mask = binary_mask_pair(pred, gt)
    return _ratio_or(int(np.count_nonzero(pred_mask & gt_mask)), int(np.count_nonzero(gt_mask)), 1.0)


def _per_slice_counts(mask: np.ndarray, axis: int) -> np.ndarray:
    """Number of foreground voxels in each slice perpendicular to ``axis``."""
    other_axes = tuple(a for a in range(mask.ndim) if a != axis)
    return np.count_nonzero(mask, axis=other_axes)


def _validated_slice_pair(pred: np.ndarray, gt: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary 3D pair plus a valid slicing axis (negative axes allowed), as bool arrays."""
    pred_mask, gt_mask = binary_mask_pair(pred, gt)
    if pred_mask.ndim != 3:
        raise ValueError(f"slice-wise Dice needs 3D volumes, got {pred_mask.ndim}D")
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be in [-3, 2], got {axis}")
    return pred_mask, gt_mask


def slice_dice_scores(pred: np.ndarray, gt: np.ndarray, axis: int = 2) -> np.ndarray:
    """Dice of every 2D slice perpendicular to ``axis`` (float array, one entry per slice).

    Slices empty in both masks score 1.0; slices empty in exactly one mask score 0.0.
    """
    pred_mask, gt_mask = _validated_slice_pair(pred, gt, axis)
    axis = axis % 3
    intersection = _per_slice_counts(pred_mask & gt_mask, axis)
    total = _per_slice_counts(pred_mask, axis) + _per_slice_counts(gt_mask, axis)
    scores = np.ones(total.shape, dtype=np.float64)
    nonempty = total > 0
    scores[nonempty] = 2.0 * intersection[nonempty] / total[nonempty]
    return scores


def mean_slice_dice(
    pred: np.ndarray, gt: np.ndarray, axis: int = 2, which: SliceSelection = "lesion"
) -> float:
    """Mean slice Dice over the slices chosen by ``which`` (see module docstring).

    ``"lesion"``: slices whose ground truth has foreground; NaN when the ground truth is empty,
    because there is then no slice to average (count such cases, do not score them).
    ``"all"``: every slice, with the empty-slice conventions of :func:`slice_dice_scores`.
    """
    if which not in ("lesion", "all"):
        raise ValueError(f"which must be 'lesion' or 'all', got {which!r}")
    scores = slice_dice_scores(pred, gt, axis)
    if which == "all":
        return float(scores.mean())
    lesion_slices = _per_slice_counts(as_binary_mask(gt, "gt"), axis % 3) > 0
    if not lesion_slices.any():
        return float("nan")
    return float(scores[lesion_slices].mean())
