"""Specification of voxel Dice / precision / recall, slice-wise Dice and HD95 in mm, on hand-built masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isles_diffseg.metrics.overlap import (
    dice_coefficient,
    mean_slice_dice,
    slice_dice_scores,
    voxel_precision,
    voxel_recall,
)
from isles_diffseg.metrics.surface import hd95_mm, surface_voxels

# --- voxel overlap --------------------------------------------------------------------------------


def test_dice_precision_recall_on_partial_overlap():
    gt = np.zeros((3, 4, 1), dtype=bool)
    gt[0:2, 0:3] = True  # 6 voxels
    pred = np.zeros_like(gt)
    pred[1:3, 1:3] = True  # 4 voxels, 2 of them (row 1, columns 1-2) in gt
    assert dice_coefficient(pred, gt) == pytest.approx(2 * 2 / (4 + 6))
    assert voxel_precision(pred, gt) == pytest.approx(2 / 4)
    assert voxel_recall(pred, gt) == pytest.approx(2 / 6)


def test_integer_and_float_zero_one_masks_are_accepted():
    gt = np.array([[[1, 1, 0, 0]]], dtype=np.uint8)
    pred = np.array([[[1.0, 0.0, 0.0, 1.0]]])
    assert dice_coefficient(pred, gt) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("pred_voxels", "gt_voxels", "expected_dice", "expected_precision", "expected_recall"),
    [
        (0, 0, 1.0, 1.0, 1.0),  # both empty
        (2, 0, 0.0, 0.0, 1.0),  # false positives only, nothing to miss
        (0, 2, 0.0, 1.0, 0.0),  # all missed, nothing claimed
    ],
)
def test_empty_mask_conventions(pred_voxels, gt_voxels, expected_dice, expected_precision, expected_recall):
    pred = np.zeros((4, 1, 1), dtype=bool)
    pred[:pred_voxels] = True
    gt = np.zeros((4, 1, 1), dtype=bool)
    gt[4 - gt_voxels :] = True
    assert dice_coefficient(pred, gt) == expected_dice
    assert voxel_precision(pred, gt) == expected_precision
    assert voxel_recall(pred, gt) == expected_recall


def test_overlap_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        dice_coefficient(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="binary"):
        voxel_precision(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="binary"):
        voxel_recall(np.array([0.0, np.nan]), np.array([0, 1]))


# --- slice-wise Dice ------------------------------------------------------------------------------


def three_slice_volume() -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) of shape (2, 2, 3); slices along axis 2: both empty / gt 2 + pred 1 inside / pred only."""
    gt = np.zeros((2, 2, 3), dtype=bool)
    pred = np.zeros_like(gt)
    gt[0, 0:2, 1] = True
    pred[0, 0, 1] = True
    pred[1, 1, 2] = True
    return pred, gt


def test_slice_dice_scores_apply_the_empty_conventions_per_slice():
    pred, gt = three_slice_volume()
    np.testing.assert_allclose(slice_dice_scores(pred, gt, axis=2), [1.0, 2 / 3, 0.0])


def test_slice_axis_selects_the_slicing_direction():
    pred, gt = three_slice_volume()
    moved_pred, moved_gt = np.moveaxis(pred, 2, 0), np.moveaxis(gt, 2, 0)
    np.testing.assert_allclose(slice_dice_scores(moved_pred, moved_gt, axis=0), [1.0, 2 / 3, 0.0])
    # along axis 0 of the original: slice x=0 holds gt 2 / pred 1 (Dice 2/3); x=1 holds only pred (0)
    np.testing.assert_allclose(slice_dice_scores(pred, gt, axis=0), [2 / 3, 0.0])


def test_mean_slice_dice_lesion_slices_versus_all_slices():
    pred, gt = three_slice_volume()
    assert mean_slice_dice(pred, gt, axis=2, which="lesion") == pytest.approx(2 / 3)
    assert mean_slice_dice(pred, gt, axis=2, which="all") == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)


def test_mean_slice_dice_over_lesion_slices_is_nan_without_lesion():
    pred = np.zeros((2, 2, 3), dtype=bool)
    pred[0, 0, 0] = True
    assert math.isnan(mean_slice_dice(pred, np.zeros_like(pred), which="lesion"))
    assert mean_slice_dice(pred, np.zeros_like(pred), which="all") == pytest.approx(2 / 3)


def test_slice_dice_rejects_bad_arguments():
    pred, gt = three_slice_volume()
    with pytest.raises(ValueError, match="which"):
        mean_slice_dice(pred, gt, which="foreground")
    with pytest.raises(ValueError, match="axis"):
        slice_dice_scores(pred, gt, axis=3)
    with pytest.raises(ValueError, match="3D"):
        slice_dice_scores(pred[:, :, 0], gt[:, :, 0])


# --- surface and HD95 -----------------------------------------------------------------------------


def test_surface_of_a_cube_is_the_cube_minus_its_face_eroded_core():
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[1:5, 1:5, 1:5] = True  # 4^3 = 64 voxels, core 2^3 = 8
    assert np.count_nonzero(surface_voxels(mask)) == 56
    touching_border = np.ones((3, 3, 3), dtype=bool)  # the border counts as outside
    assert np.count_nonzero(surface_voxels(touching_border)) == 26


def single_voxel(index: tuple[int, int, int], shape: tuple[int, int, int] = (8, 8, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[index] = True
    return mask


def test_hd95_measures_millimetres_along_the_anisotropic_axis():
    spacing = (0.5, 0.5, 2.0)
    gt = single_voxel((2, 2, 1))
    assert hd95_mm(single_voxel((2, 2, 4)), gt, spacing) == pytest.approx(3 * 2.0)  # 3 slices apart
    assert hd95_mm(single_voxel((5, 2, 1)), gt, spacing) == pytest.approx(3 * 0.5)  # 3 columns apart


def test_hd95_is_the_95th_percentile_of_pooled_distances_not_the_maximum():
    gt = single_voxel((1, 1, 0))
    pred = gt | single_voxel((1, 1, 5))
    # pred -> gt: [0, 5 slices * 2 mm = 10]; gt -> pred: [0]. Pooled [0, 0, 10]:
    # rank 0.95 * 2 = 1.9 -> 0 + 0.9 * (10 - 0) = 9.0 (the maximum would be 10).
    assert hd95_mm(pred, gt, (1.0, 1.0, 2.0)) == pytest.approx(9.0)


def test_hd95_of_identical_masks_is_zero_even_at_the_array_border():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[0:3, 0:3, 0:3] = True
    assert hd95_mm(mask, mask, (0.4, 0.4, 2.0)) == 0.0


def test_hd95_does_not_depend_on_the_surrounding_array():
    pred_small = np.zeros((4, 4, 4), dtype=bool)
    gt_small = np.zeros_like(pred_small)
    gt_small[0:3, 0:3, 0:3] = True
    pred_small[1:4, 0:2, 0:3] = True
    pred_large = np.pad(pred_small, 5)
    gt_large = np.pad(gt_small, 5)
    spacing = (0.5, 0.7, 2.0)
    assert hd95_mm(pred_small, gt_small, spacing) == pytest.approx(hd95_mm(pred_large, gt_large, spacing))


def test_hd95_empty_conventions():
    empty = np.zeros((4, 4, 4), dtype=bool)
    voxel = single_voxel((1, 1, 1), shape=(4, 4, 4))
    assert hd95_mm(empty, empty, (1.0, 1.0, 1.0)) == 0.0
    assert math.isnan(hd95_mm(voxel, empty, (1.0, 1.0, 1.0)))
    assert math.isnan(hd95_mm(empty, voxel, (1.0, 1.0, 1.0)))


def test_hd95_rejects_bad_spacing():
    voxel = single_voxel((1, 1, 1))
    with pytest.raises(ValueError, match="3 entries"):
        hd95_mm(voxel, voxel, (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        hd95_mm(voxel, voxel, (1.0, 0.0, 1.0))
