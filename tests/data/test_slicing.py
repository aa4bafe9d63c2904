"""Volume <-> slices: fixed size, binary masks, exact native-grid round trip."""

from __future__ import annotations

import numpy as np
import pytest

from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.data.slicing import SliceGeometry, image_to_slices, mask_to_slices, slices_to_volume


def _blobs(shape, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for _ in range(6):
        c = [rng.integers(3, s - 3) for s in shape[:2]]
        mask[c[0] - 3 : c[0] + 3, c[1] - 2 : c[1] + 4, rng.integers(0, shape[2])] = 1
    return mask


def test_slices_have_the_requested_size_and_masks_stay_binary():
    geometry = SliceGeometry.plan((40, 52, 7), 32)
    image = np.random.default_rng(0).random((40, 52, 7, 2)).astype(np.float32)
    slices = image_to_slices(image, geometry)
    masks = mask_to_slices(_blobs((40, 52, 7)), geometry)
    assert slices.shape == (7, 2, 32, 32) and masks.shape == (7, 32, 32)
    assert set(np.unique(masks)) <= {0, 1} and masks.dtype == np.uint8


def test_native_round_trip_returns_the_original_mask_exactly():
    # A non-square, non-RAS volume: pad to square, no resampling (image_size = padded size),
    # reassemble, undo the padding and the reorientation.
    affine = np.array([[-0.4, 0, 0, 0], [0, -0.4, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    native_mask = _blobs((30, 37, 5))
    native = NativeGeometry(affine, native_mask.shape)
    canonical = native.to_canonical(native_mask)
    geometry = SliceGeometry.plan(canonical.shape, image_size=37)
    slices = mask_to_slices(canonical, geometry)
    back = native.to_native(slices_to_volume(slices, geometry, binary=True))
    np.testing.assert_array_equal(back, native_mask)


def test_resampled_round_trip_keeps_the_lesion_geometry():
    mask = np.zeros((60, 75, 4), np.uint8)
    mask[20:40, 30:55, 1:3] = 1
    geometry = SliceGeometry.plan(mask.shape, 32)
    back = slices_to_volume(mask_to_slices(mask, geometry).astype(np.float32), geometry, binary=True)
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert back.shape == mask.shape and dice > 0.9


def test_padding_is_centred_and_recorded():
    geometry = SliceGeometry.plan((10, 15, 3), 16)
    assert geometry.square == 15 and geometry.pad_x == (2, 3) and geometry.pad_y == (0, 0)
    assert SliceGeometry.from_dict(geometry.to_dict()) == geometry


def test_bad_shapes_are_refused():
    geometry = SliceGeometry.plan((10, 12, 3), 16)
    with pytest.raises(ValueError, match="differs from the planned"):
        mask_to_slices(np.zeros((10, 13, 3), np.uint8), geometry)
    with pytest.raises(ValueError, match="expected slices of shape"):
        slices_to_volume(np.zeros((2, 16, 16)), geometry)
    with pytest.raises(ValueError, match="interpolation"):
        mask_to_slices(np.zeros((10, 12, 3), np.uint8), geometry, "bicubic")
