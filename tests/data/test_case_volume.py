"""Reading, checking, reorienting and windowing one case."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from isles_diffseg.data.case_volume import preprocess_case
from isles_diffseg.data.discovery import discover_cases
from isles_diffseg.data.nifti_io import CaseInputError
from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.data.windows import apply_window

BASELINE = {"cbf": [0, 70], "tmax": [4, 30], "cbv": [0, 9], "mtt": [10, 30]}


def _only_case(root):
    (case,) = discover_cases(root)
    return case


def test_scaled_uint16_mask_becomes_zero_one(tmp_path, write_case):
    paths = write_case(tmp_path, 158, mask_as_scaled_uint16=True)
    raw = nib.load(str(paths["mask"]))
    assert raw.get_data_dtype() == np.uint16 and np.asarray(raw.dataobj).max() == pytest.approx(1.0, abs=1e-3)
    case = preprocess_case(_only_case(tmp_path), ["cbf", "tmax"], BASELINE)
    assert set(np.unique(case.mask)) == {0, 1}
    assert case.mask.sum() == paths["_maps"]["mask"].sum()


def test_channels_are_windowed_to_unit_range_and_background_is_zero(tmp_path, write_case):
    write_case(tmp_path)
    case = preprocess_case(_only_case(tmp_path), ["cbf", "tmax"], BASELINE)
    assert case.image.shape[-1] == 2 and case.image.dtype == np.float32
    assert np.isfinite(case.image).all() and case.image.min() >= 0 and case.image.max() <= 1
    assert (case.image[case.brain == 0] == 0).all()
    assert case.brain.sum() > 0 and (case.mask <= case.brain).all()


def test_reorientation_to_ras_is_exact_and_invertible(tmp_path, write_case):
    paths = write_case(tmp_path)
    native_mask = np.asarray(nib.load(str(paths["mask"])).dataobj)
    case = preprocess_case(_only_case(tmp_path), ["cbf", "tmax"], BASELINE)
    assert nib.aff2axcodes(case.geometry.canonical_affine()) == ("R", "A", "S")
    assert case.geometry.axcodes == ("L", "P", "S")
    np.testing.assert_array_equal(case.geometry.to_native(case.mask), native_mask)
    # Same world position for the same voxel through both affines.
    ijk = np.array([3, 5, 2])
    world = case.geometry.affine[:3, :3] @ ijk + case.geometry.affine[:3, 3]
    ras_ijk = np.round(np.linalg.solve(case.geometry.canonical_affine()[:3, :3],
                                       world - case.geometry.canonical_affine()[:3, 3])).astype(int)
    assert case.mask[tuple(ras_ijk)] == native_mask[tuple(ijk)]


def test_native_geometry_round_trip_for_a_permuted_affine():
    affine = np.array([[0, 0, 2.0, 0], [-0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 1]])  # axes permuted
    geometry = NativeGeometry(affine, (4, 5, 6))
    data = np.arange(120).reshape(4, 5, 6)
    canonical = geometry.to_canonical(data)
    assert canonical.shape == (6, 4, 5)
    np.testing.assert_array_equal(geometry.to_native(canonical), data)


def test_window_handles_nan_and_inf():
    out = apply_window(np.array([np.nan, np.inf, -np.inf, -5, 35, 100.0]), 0, 70)
    np.testing.assert_allclose(out, [0, 0, 0, 0, 0.5, 1.0])


@pytest.mark.parametrize(
    "break_it, problem",
    [
        (lambda p: p["tmax"].unlink(), "modality 'tmax' is missing"),
        (lambda p: p["cbf"].write_bytes(b""), "empty (0 bytes)"),
        (lambda p: p["cbf"].write_bytes(b"this is not nifti"), "not a readable NIfTI"),
        (lambda p: p["cbf"].write_bytes(gzip.compress(gzip.decompress(p["cbf"].read_bytes())[:600])), "truncated"),
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((20, 24, 6, 3), np.float32), np.eye(4)), str(p["tmax"])),
         "must be a 3D volume"),
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((20, 24, 5), np.float32), np.eye(4)), str(p["tmax"])),
         "grid (20, 24, 5) differs"),
        (lambda p: p["mask"].unlink(), "lesion mask is missing"),
    ],
    ids=["missing-modality", "empty-file", "unreadable", "truncated", "4d-map", "grid-mismatch", "missing-mask"],
)
def test_bad_input_names_the_file_and_the_problem(tmp_path, write_case, break_it, problem):
    paths = write_case(tmp_path)
    break_it(paths)
    with pytest.raises(CaseInputError) as info:
        preprocess_case(_only_case(tmp_path), ["cbf", "tmax"], BASELINE)
    assert problem in str(info.value)
    assert "sub-stroke0001" in str(info.value)


def test_misregistered_channel_is_refused(tmp_path, write_case):
    paths = write_case(tmp_path)
    moved = nib.load(str(paths["tmax"]))
    shifted = moved.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(moved.dataobj), shifted), str(paths["tmax"]))
    with pytest.raises(CaseInputError, match=r"affine differs .*sub-stroke0001_ses-01_space-ncct_tmax"):
        preprocess_case(_only_case(tmp_path), ["cbf", "tmax"], BASELINE)
