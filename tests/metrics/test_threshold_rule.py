"""Specification of the clinical threshold baselines on small constructed perfusion volumes.

Spacing (2, 2, 2.5) mm makes each voxel 10 mm^3 = 0.01 mL, so component sizes are easy to count.
Axis 0 is left-right (canonical RAS).
"""

from __future__ import annotations

import numpy as np
import pytest

from isles_diffseg.baselines.threshold_rule import (
    hemisphere_masks,
    relative_cbf,
    remove_small_components,
    tmax_rcbf_rule,
    tmax_rule,
)

SPACING_MM = (2.0, 2.0, 2.5)  # 0.01 mL per voxel
SHAPE = (10, 6, 6)
BLOCK = (slice(2, 5), slice(2, 5), slice(2, 5))  # 27 voxels = 0.27 mL
SPECK = (7, 3, 3)  # 1 voxel = 0.01 mL


def brain_inside_border() -> np.ndarray:
    brain = np.zeros(SHAPE, dtype=np.uint8)
    brain[1:9, 1:5, 1:5] = 1
    return brain


def tmax_with_block_and_speck() -> np.ndarray:
    """Tmax 2 s in the brain, 8 s in BLOCK and at SPECK; NaN outside the brain except one 20 s voxel."""
    brain = brain_inside_border().astype(bool)
    tmax = np.where(brain, 2.0, np.nan)
    tmax[BLOCK] = 8.0
    tmax[SPECK] = 8.0
    tmax[0, 0, 0] = 20.0  # outside the brain: must never be lesion
    tmax[6, 1, 1] = np.nan  # a missing value inside the brain
    return tmax


def block_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[BLOCK] = True
    return mask


# --- Tmax rule ---------------------------------------------------------------------------------


def test_tmax_rule_finds_the_hypoperfused_block_and_drops_the_speck():
    lesion = tmax_rule(tmax_with_block_and_speck(), brain_inside_border(), SPACING_MM, min_component_ml=0.05)
    np.testing.assert_array_equal(lesion, block_mask())


def test_without_component_filter_the_speck_stays():
    lesion = tmax_rule(tmax_with_block_and_speck(), brain_inside_border(), SPACING_MM, min_component_ml=0.0)
    expected = block_mask()
    expected[SPECK] = True
    np.testing.assert_array_equal(lesion, expected)


def test_component_filter_threshold_is_in_millilitres():
    tmax, brain = tmax_with_block_and_speck(), brain_inside_border()
    assert tmax_rule(tmax, brain, SPACING_MM, min_component_ml=0.25).sum() == 27  # 0.27 mL block kept
    assert tmax_rule(tmax, brain, SPACING_MM, min_component_ml=0.30).sum() == 0  # and removed
    assert tmax_rule(tmax, brain, SPACING_MM).sum() == 0  # default 1.0 mL removes it too


def test_tmax_threshold_is_strict():
    tmax = tmax_with_block_and_speck()
    tmax[BLOCK] = 6.0
    lesion = tmax_rule(tmax, brain_inside_border(), SPACING_MM, min_component_ml=0.0)
    assert lesion.sum() == 1  # only the speck


def test_remove_small_components_uses_26_connectivity_by_default():
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner-touching pair: one 0.02 mL component
    kept = remove_small_components(mask, SPACING_MM, min_component_ml=0.015)
    np.testing.assert_array_equal(kept, mask)
    assert remove_small_components(mask, SPACING_MM, min_component_ml=0.015, connectivity=6).sum() == 0


# --- hemispheres and relative CBF -------------------------------------------------------------


def test_hemispheres_split_at_the_brain_centre_of_mass():
    brain = np.zeros((12, 2, 2), dtype=bool)
    brain[2:10] = True  # centre of mass at x = 5.5
    lower, upper = hemisphere_masks(brain, axis_lr=0)
    assert np.flatnonzero(lower.any(axis=(1, 2))).tolist() == [2, 3, 4, 5]
    assert np.flatnonzero(upper.any(axis=(1, 2))).tolist() == [6, 7, 8, 9]


def cbf_with_two_reduced_blocks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cbf, tmax, brain): CBF 50 in the brain; in the lower-x hemisphere block A has CBF 10 and
    block B CBF 20; both blocks have Tmax 8 s, the rest Tmax 2 s."""
    brain = np.zeros(SHAPE, dtype=bool)
    brain[1:9] = True  # centre of mass x = 4.5: lower side x 1..4, upper side x 5..8
    cbf = np.where(brain, 50.0, np.nan)
    tmax = np.where(brain, 2.0, np.nan)
    block_a = (slice(1, 3), slice(0, 2), slice(0, 2))
    block_b = (slice(1, 3), slice(4, 6), slice(4, 6))
    cbf[block_a], cbf[block_b] = 10.0, 20.0
    tmax[block_a] = tmax[block_b] = 8.0
    return cbf, tmax, brain


def test_relative_cbf_divides_by_the_opposite_hemisphere_median():
    cbf, _, brain = cbf_with_two_reduced_blocks()
    rcbf = relative_cbf(cbf, brain)
    assert rcbf[1, 0, 0] == pytest.approx(10 / 50)  # block A, reference = upper-side median 50
    assert rcbf[1, 5, 5] == pytest.approx(20 / 50)  # block B
    assert rcbf[3, 3, 3] == pytest.approx(1.0)
    assert rcbf[7, 3, 3] == pytest.approx(1.0)  # lower-side median is still 50 (16 of 144 voxels reduced)
    assert np.isnan(rcbf[0]).all() and np.isnan(rcbf[9]).all()  # outside the brain


def test_rcbf_rule_keeps_only_voxels_with_reduced_relative_cbf():
    cbf, tmax, brain = cbf_with_two_reduced_blocks()
    hypoperfused = tmax_rule(tmax, brain, SPACING_MM, min_component_ml=0.0)
    core = tmax_rcbf_rule(tmax, cbf, brain, SPACING_MM, min_component_ml=0.0)
    assert hypoperfused.sum() == 16  # blocks A and B
    expected_core = np.zeros(SHAPE, dtype=bool)
    expected_core[1:3, 0:2, 0:2] = True  # only block A: rCBF 0.2 < 0.3; block B has 0.4
    np.testing.assert_array_equal(core, expected_core)


def test_rcbf_rule_is_relative_not_absolute():
    cbf, tmax, brain = cbf_with_two_reduced_blocks()
    symmetric_low = np.where(brain, 10.0, np.nan)  # CBF 10 everywhere: rCBF 1 everywhere
    assert tmax_rcbf_rule(tmax, symmetric_low, brain, SPACING_MM, min_component_ml=0.0).sum() == 0
    assert tmax_rcbf_rule(tmax, cbf, brain, SPACING_MM, rcbf_threshold=0.5, min_component_ml=0.0).sum() == 16


def test_rcbf_rule_needs_tmax_above_threshold():
    cbf, tmax, brain = cbf_with_two_reduced_blocks()
    tmax[brain] = 2.0
    assert tmax_rcbf_rule(tmax, cbf, brain, SPACING_MM, min_component_ml=0.0).sum() == 0


# --- bad input ---------------------------------------------------------------------------------


def test_wrong_shapes_raise():
    brain = brain_inside_border()
    with pytest.raises(ValueError, match="tmax has shape"):
        tmax_rule(np.zeros((10, 6, 5)), brain, SPACING_MM)
    cbf, tmax, brain_mask = cbf_with_two_reduced_blocks()
    with pytest.raises(ValueError, match="cbf has shape"):
        tmax_rcbf_rule(tmax, cbf[:, :, :5], brain_mask, SPACING_MM)


def test_non_binary_brain_mask_and_bad_parameters_raise():
    tmax = tmax_with_block_and_speck()
    with pytest.raises(ValueError, match="brain_mask must be binary"):
        tmax_rule(tmax, brain_inside_border() * 2, SPACING_MM)
    with pytest.raises(ValueError, match="spacing_mm"):
        tmax_rule(tmax, brain_inside_border(), (2.0, 2.0))
    with pytest.raises(ValueError, match="min_component_ml"):
        tmax_rule(tmax, brain_inside_border(), SPACING_MM, min_component_ml=-1.0)


def test_relative_cbf_without_usable_reference_raises():
    cbf, _, brain = cbf_with_two_reduced_blocks()
    with pytest.raises(ValueError, match="empty"):
        relative_cbf(cbf, np.zeros_like(brain))
    zero_upper = cbf.copy()
    zero_upper[5:9] = 0.0
    with pytest.raises(ValueError, match="median CBF"):
        relative_cbf(zero_upper, brain)
