"""Specification of the ISLES'24 official per-case metrics, on small hand-built masks.

Most lesion layouts are 1-voxel-thick lines along axis 0 of an (n, 1, 1) volume, so every voxel
count, IoU and Dice below can be checked by counting.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from isles_diffseg.metrics.isles import (
    LesionDetection,
    absolute_volume_difference_ml,
    aggregate_case_metrics,
    dice_3d,
    isles24_case_metrics,
    lesion_count_difference,
    lesion_f1,
)

ISOTROPIC_MM = (1.0, 1.0, 1.0)


def line(length: int, *voxel_ranges: tuple[int, int]) -> np.ndarray:
    """(length, 1, 1) bool volume with the half-open x ranges set."""
    mask = np.zeros((length, 1, 1), dtype=bool)
    for start, stop in voxel_ranges:
        mask[start:stop] = True
    return mask


def two_cubes(offset: tuple[int, int, int]) -> np.ndarray:
    """Two 2x2x2 cubes in an 8^3 volume, the second displaced from the first by ``offset``."""
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    x, y, z = (1 + o for o in offset)
    mask[x : x + 2, y : y + 2, z : z + 2] = True
    return mask


# --- connectivity: which touching cubes are one lesion ----------------------------------------


@pytest.mark.parametrize(
    ("offset", "components_by_connectivity"),
    [
        ((2, 0, 0), {6: 1, 18: 1, 26: 1}),  # sharing a face
        ((2, 2, 0), {6: 2, 18: 1, 26: 1}),  # sharing only an edge
        ((2, 2, 2), {6: 2, 18: 2, 26: 1}),  # sharing only a corner
    ],
)
def test_touching_cubes_count_as_one_or_two_lesions_by_connectivity(offset, components_by_connectivity):
    gt = two_cubes(offset)
    empty = np.zeros_like(gt)
    for connectivity, n_components in components_by_connectivity.items():
        assert lesion_count_difference(empty, gt, connectivity=connectivity) == n_components
        metrics = isles24_case_metrics(empty, gt, ISOTROPIC_MM, connectivity=connectivity)
        assert metrics["n_gt_lesions"] == n_components


def test_default_connectivity_is_26():
    corner_touching = two_cubes((2, 2, 2))
    assert lesion_count_difference(np.zeros_like(corner_touching), corner_touching) == 1


def test_count_difference_is_absolute_and_symmetric():
    gt = line(12, (0, 2), (4, 6), (8, 10))  # 3 lesions
    pred = line(12, (0, 6))  # 1 lesion
    assert lesion_count_difference(pred, gt) == 2
    assert lesion_count_difference(gt, pred) == 2


# --- empty cases --------------------------------------------------------------------------------


def test_both_empty_is_a_perfect_case():
    empty = np.zeros((4, 4, 4), dtype=bool)
    metrics = isles24_case_metrics(empty, empty, ISOTROPIC_MM)
    assert metrics["dice"] == 1.0
    assert metrics["lesion_f1"] == 1.0
    assert metrics["abs_lesion_count_diff"] == 0
    assert metrics["abs_volume_diff_ml"] == 0.0
    assert (metrics["lesion_tp"], metrics["lesion_fp"], metrics["lesion_fn"]) == (0, 0, 0)


def test_empty_prediction_misses_every_lesion():
    gt = line(10, (0, 2), (5, 8))  # 2 lesions, 5 voxels
    metrics = isles24_case_metrics(np.zeros_like(gt), gt, (10.0, 10.0, 10.0))  # 1 mL voxels
    assert metrics["dice"] == 0.0
    assert metrics["lesion_f1"] == 0.0
    assert (metrics["lesion_tp"], metrics["lesion_fp"], metrics["lesion_fn"]) == (0, 0, 2)
    assert metrics["abs_lesion_count_diff"] == 2
    assert metrics["abs_volume_diff_ml"] == pytest.approx(5.0)


def test_prediction_on_empty_ground_truth_is_all_false_positives():
    pred = line(10, (0, 1), (3, 4), (6, 7))
    metrics = isles24_case_metrics(pred, np.zeros_like(pred), ISOTROPIC_MM)
    assert metrics["dice"] == 0.0
    assert metrics["lesion_f1"] == 0.0
    assert (metrics["lesion_tp"], metrics["lesion_fp"], metrics["lesion_fn"]) == (0, 3, 0)
    assert metrics["abs_lesion_count_diff"] == 3


# --- volume in mL on anisotropic voxels ---------------------------------------------------------


def test_absolute_volume_difference_uses_anisotropic_voxel_volume():
    gt = np.zeros((10, 10, 10), dtype=bool)
    gt[:] = True  # 1000 voxels
    pred = np.zeros_like(gt)
    pred[:2] = True  # 200 voxels
    spacing = (0.5, 0.5, 2.0)  # 0.5 mm^3 per voxel
    # |1000 - 200| voxels * 0.5 mm^3 = 400 mm^3 = 0.4 mL
    assert absolute_volume_difference_ml(pred, gt, spacing) == pytest.approx(0.4)
    metrics = isles24_case_metrics(pred, gt, spacing)
    assert metrics["abs_volume_diff_ml"] == pytest.approx(0.4)
    assert metrics["gt_volume_ml"] == pytest.approx(0.5)
    assert metrics["pred_volume_ml"] == pytest.approx(0.1)


# --- Dice -----------------------------------------------------------------------------------------


def test_dice_3d_is_one_global_dice_over_all_lesions():
    gt = line(10, (0, 4), (6, 10))  # 8 voxels in two lesions
    pred = line(10, (0, 4))  # 4 voxels, all correct
    assert dice_3d(pred, gt) == pytest.approx(2 * 4 / (4 + 8))


# --- lesion matching ------------------------------------------------------------------------------


def test_split_prediction_gives_one_match_and_one_false_positive():
    gt = line(10, (0, 10))  # one lesion of 10 voxels
    pred = line(10, (0, 4), (6, 10))  # two halves of 4 voxels: IoU 4/10 = 0.4 each
    detection = lesion_f1(pred, gt)
    assert detection == LesionDetection(tp=1, fp=1, fn=0)
    assert detection.f1 == pytest.approx(2 / 3)  # 2*1 / (2*1 + 1 + 0)
    metrics = isles24_case_metrics(pred, gt, ISOTROPIC_MM)
    assert metrics["lesion_f1"] == pytest.approx(2 / 3)
    assert metrics["dice"] == pytest.approx(2 * 8 / (8 + 10))
    assert metrics["abs_lesion_count_diff"] == 1


def test_split_halves_match_under_iou_threshold_point_two_but_not_point_five():
    gt = line(10, (0, 10))
    pred = line(10, (0, 4), (6, 10))
    assert lesion_f1(pred, gt, iou_threshold=0.5) == LesionDetection(tp=0, fp=2, fn=1)


def test_iou_equal_to_threshold_matches_and_below_does_not():
    gt = line(6, (0, 5))
    assert lesion_f1(line(6, (0, 1)), gt).tp == 1  # IoU 1/5 = 0.2
    assert lesion_f1(line(6, (5, 6)), gt).tp == 0  # no overlap
    gt_six = line(6, (0, 6))
    assert lesion_f1(line(6, (0, 1)), gt_six) == LesionDetection(tp=0, fp=1, fn=1)  # IoU 1/6 < 0.2


def test_one_prediction_spanning_two_lesions_matches_only_one():
    gt = line(10, (0, 6), (7, 9))  # 6 and 2 voxels
    pred = line(10, (0, 9))  # 9 voxels: IoU 6/9 with the first, 2/9 >= 0.2 with the second
    assert lesion_f1(pred, gt) == LesionDetection(tp=1, fp=0, fn=1)


def test_pairs_are_matched_in_descending_iou_order():
    # G1 = x0..3, G2 = x5..6; P1 = x2..6 overlaps G1 (IoU 2/7) and G2 (IoU 2/5); P2 = x0 overlaps G1 (IoU 1/4).
    # Descending IoU: G2-P1 first, so G1 is left for P2 and all lesions match. Matching each ground-truth
    # lesion in label order to its best partner would pair G1-P1 and leave G2 and P2 unmatched.
    gt = line(8, (0, 4), (5, 7))
    pred = line(8, (0, 1), (2, 7))
    assert lesion_f1(pred, gt) == LesionDetection(tp=2, fp=0, fn=0)


# --- bad input ---------------------------------------------------------------------------------


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        isles24_case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), ISOTROPIC_MM)


def test_non_binary_mask_raises():
    probabilities = np.full((4, 4, 4), 0.7)
    with pytest.raises(ValueError, match="binary"):
        dice_3d(probabilities, np.zeros((4, 4, 4)))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, float("nan"), 1.0)])
def test_bad_spacing_raises(spacing):
    mask = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="spacing_mm"):
        absolute_volume_difference_ml(mask, mask, spacing)


def test_2d_masks_are_rejected():
    with pytest.raises(ValueError, match="3D"):
        lesion_f1(np.zeros((4, 4)), np.zeros((4, 4)))


def test_unknown_connectivity_and_threshold_raise():
    mask = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="connectivity"):
        lesion_count_difference(mask, mask, connectivity=8)
    with pytest.raises(ValueError, match="iou_threshold"):
        lesion_f1(mask, mask, iou_threshold=1.5)


# --- cohort aggregation ------------------------------------------------------------------------


def test_aggregate_reports_mean_median_sample_std_and_nan_counts():
    rows = [
        {"case_id": "a", "dice": 0.2, "hd95_mm": 1.0, "always_nan": float("nan")},
        {"case_id": "b", "dice": 0.4, "hd95_mm": float("nan"), "always_nan": float("nan")},
        {"case_id": "c", "dice": 0.9, "hd95_mm": 3.0, "always_nan": float("nan")},
    ]
    summary = aggregate_case_metrics(rows)
    assert summary["n_cases"] == 3
    assert summary["dice_mean"] == pytest.approx(0.5)
    assert summary["dice_median"] == pytest.approx(0.4)
    assert summary["dice_std"] == pytest.approx(math.sqrt((0.09 + 0.01 + 0.16) / 2))
    assert summary["dice_n_nan"] == 0
    assert summary["hd95_mm_mean"] == pytest.approx(2.0)
    assert summary["hd95_mm_median"] == pytest.approx(2.0)
    assert summary["hd95_mm_std"] == pytest.approx(math.sqrt(2.0))
    assert summary["hd95_mm_n_nan"] == 1
    assert math.isnan(summary["always_nan_mean"]) and summary["always_nan_n_nan"] == 3
    assert not any(key.startswith("case_id") for key in summary)


def test_aggregate_of_case_metric_rows():
    gt = line(10, (0, 10))
    rows = [
        isles24_case_metrics(gt, gt, ISOTROPIC_MM),  # perfect
        isles24_case_metrics(line(10, (0, 4), (6, 10)), gt, ISOTROPIC_MM),  # split, F1 2/3
    ]
    summary = aggregate_case_metrics(rows)
    assert summary["lesion_f1_mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert summary["abs_lesion_count_diff_mean"] == pytest.approx(0.5)


def test_aggregate_rejects_empty_and_inconsistent_rows():
    with pytest.raises(ValueError, match="empty"):
        aggregate_case_metrics([])
    with pytest.raises(ValueError, match="numeric keys"):
        aggregate_case_metrics([{"dice": 1.0}, {"hd95_mm": 1.0}])
    with pytest.raises(ValueError, match="neither numeric nor a string"):
        aggregate_case_metrics([{"dice": None}])


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_3d_labels_are_scipy_s_exactly(connectivity):
    """cc3d labels 3D masks; scipy.ndimage.label is the oracle: same components, same numbering (the numbering
    decides ties in the greedy matching)."""
    from scipy import ndimage

    from isles_diffseg.metrics.isles import connectivity_structure, label_lesions

    rng = np.random.default_rng(connectivity)
    for _ in range(10):
        field = ndimage.gaussian_filter(rng.random((30, 34, 12)), 1.2)
        mask = field > np.quantile(field, rng.uniform(0.6, 0.98))
        expected, n_expected = ndimage.label(mask, structure=connectivity_structure(3, connectivity))
        labels, n = label_lesions(mask, connectivity)
        assert n == n_expected
        np.testing.assert_array_equal(labels, expected)
