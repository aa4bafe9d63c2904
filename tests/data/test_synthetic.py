"""Specification of the built-in synthetic ISLES'24 dataset (demo profile, CPU-sized)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from scipy import ndimage

from isles_diffseg.data.synthetic import (
    BUILTIN_PROFILES,
    PERFUSION_MAPS,
    SyntheticProfile,
    generate_case,
    resolve_profile,
    write_from_parameters,
    write_synthetic_dataset,
)
from isles_diffseg.data.synthetic_anatomy import Tissue
from isles_diffseg.data.synthetic_lesion import LesionKind, LesionMix, empty_case_indices, lesion_kind_for

SEED = 2024
PARAMETERS_FILE = Path(__file__).resolve().parents[2] / "conf" / "base" / "parameters_synthetic.yml"
# A grid small enough to generate many times per test, on the demo's physical head.
TINY = SyntheticProfile(
    n_cases=4,
    shape_x=48,
    shape_y=(56, 60),
    n_slices=(12, 14),
    spacing_xy_mm=(3.9, 4.1),
    slice_mm=(10.0, 12.0),
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The full demo dataset (16 cases), written once for the module."""
    root = tmp_path_factory.mktemp("synthetic") / "isles24_synthetic"
    return root, write_synthetic_dataset(root, profile="demo", seed=SEED)


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def _case_arrays(root: Path, summary: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(_load(root / p).get_fdata(dtype=np.float32)) for k, p in summary["paths"].items()}


def _canonical(image: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(image).get_fdata(dtype=np.float32))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def _tmax_rule(tmax: np.ndarray, voxel_ml: float, min_component_ml: float = 1.0) -> np.ndarray:
    """Clinical rule: Tmax > 6 s inside the field of view, components under 1 mL removed (26-conn.)."""
    hypoperfused = np.isfinite(tmax) & (np.nan_to_num(tmax) > 6.0)
    labels, count = ndimage.label(hypoperfused, structure=np.ones((3, 3, 3)))
    if count == 0:
        return hypoperfused
    component_ml = np.bincount(labels.ravel()) * voxel_ml
    component_ml[0] = 0.0
    return (component_ml >= min_component_ml)[labels]


def test_writes_exactly_the_isles24_v7_layout(demo):
    root, summaries = demo
    expected = set()
    for index, summary in enumerate(summaries):
        case = f"sub-stroke{index + 1:04d}"
        assert summary["case_id"] == case
        perfusion = f"derivatives/{case}/ses-01/perfusion-maps/{case}_ses-01_space-ncct_"
        expected |= {perfusion + f"{m}.nii.gz" for m in ("cbf", "tmax", "cbv", "mtt")}
        expected.add(f"derivatives/{case}/ses-02/{case}_ses-02_space-ncct_lesion-msk.nii.gz")
        expected.add(f"raw_data/{case}/ses-01/{case}_ses-01_ncct.nii.gz")
        assert set(summary["paths"].values()) <= expected
    written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert len(summaries) == 16
    assert written == expected  # nothing else, in particular no table of generation factors


def test_summary_holds_paths_geometry_and_lesion_size_only(demo):
    _, summaries = demo
    assert set(summaries[1]) == {
        "case_id",
        "paths",
        "shape",
        "spacing_mm",
        "axcodes",
        "lesion_voxels",
        "lesion_ml",
    }
    assert set(summaries[1]["paths"]) == {"cbf", "tmax", "cbv", "mtt", "ncct", "lesion_msk"}


def test_case_volumes_share_one_realistic_grid_and_orientations_vary(demo):
    root, summaries = demo
    axcodes = set()
    for summary in summaries:
        images = [_load(root / p) for p in summary["paths"].values()]
        affine = images[0].affine
        assert all(img.shape == images[0].shape == (96, 112, 24) for img in images)
        assert all(np.allclose(img.affine, affine, atol=1e-4) for img in images)
        assert not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])))  # tilted, not diagonal
        zooms = images[0].header.get_zooms()
        assert 1.9 <= zooms[0] <= 2.1 and 1.9 <= zooms[1] <= 2.1 and zooms[2] == pytest.approx(6.0)
        axcodes.add("".join(nib.aff2axcodes(affine)))
        assert summary["axcodes"] == "".join(nib.aff2axcodes(affine))
    assert "LPS" in axcodes and len(axcodes) >= 3


def test_same_seed_same_arrays_and_different_seed_different():
    first = generate_case(2, TINY, np.random.default_rng([SEED, 2]))
    again = generate_case(2, TINY, np.random.default_rng([SEED, 2]))
    other = generate_case(2, TINY, np.random.default_rng([SEED + 1, 2]))
    for name in PERFUSION_MAPS:
        np.testing.assert_array_equal(first.maps[name], again.maps[name])
    np.testing.assert_array_equal(first.ncct, again.ncct)
    np.testing.assert_array_equal(first.lesion_mask, again.lesion_mask)
    np.testing.assert_array_equal(first.affine, again.affine)
    assert first.maps["cbf"].shape != other.maps["cbf"].shape or not np.array_equal(
        first.maps["cbf"], other.maps["cbf"], equal_nan=True
    )


def test_dataset_written_twice_with_one_seed_has_identical_data(tmp_path):
    first = write_synthetic_dataset(tmp_path / "a", profile=TINY, seed=7, n_cases=2)
    second = write_synthetic_dataset(tmp_path / "b", profile=TINY, seed=7, n_cases=2)
    for one, two in zip(first, second, strict=True):
        for key in one["paths"]:
            a = _load(tmp_path / "a" / one["paths"][key]).get_fdata()
            b = _load(tmp_path / "b" / two["paths"][key]).get_fdata()
            np.testing.assert_array_equal(a, b)


def test_perfusion_maps_are_nan_exactly_outside_the_head_and_ncct_has_none(demo):
    root, summaries = demo
    for index in (0, 3):
        case = generate_case(index, BUILTIN_PROFILES["demo"], np.random.default_rng([SEED, index]))
        outside = case.tissue == Tissue.AIR
        for name in PERFUSION_MAPS:
            np.testing.assert_array_equal(np.isnan(case.maps[name]), outside)
        assert outside.any() and (~outside).any()
        ncct = _load(root / summaries[index]["paths"]["ncct"])
        assert ncct.get_data_dtype() == np.int16
        values = ncct.get_fdata()
        assert np.isfinite(values).all()
        assert np.median(values[outside]) < -900


def test_values_are_plausible_in_real_units():
    profile = BUILTIN_PROFILES["demo"]
    for index in (0, 4):
        case = generate_case(index, profile, np.random.default_rng([SEED, index]))
        healthy = case.lesion_mask == 0
        if index:  # keep only tissue with normal arrival time in the lesion case
            healthy &= case.maps["tmax"] < 4.0
        grey = (case.tissue == Tissue.GREY_MATTER) & healthy
        white = (case.tissue == Tissue.WHITE_MATTER) & healthy
        csf = case.tissue == Tissue.CSF
        cbf, cbv, mtt, tmax = (case.maps[k] for k in ("cbf", "cbv", "mtt", "tmax"))
        assert 42 <= cbf[grey].mean() <= 70 and 16 <= cbf[white].mean() <= 28 and cbf[csf].mean() <= 5
        assert 3.0 <= cbv[grey].mean() <= 5.0 and 1.4 <= cbv[white].mean() <= 2.6
        assert 4.0 <= mtt[grey | white].mean() <= 6.0
        assert tmax[grey | white].mean() < 2.0 and np.percentile(tmax[grey | white], 99) < 3.0
        brain_hu = case.ncct[grey | white]
        assert 28 <= brain_hu.mean() <= 40 and abs(case.ncct[csf].mean() - 5) < 5
        assert case.ncct[case.tissue == Tissue.SKULL].mean() > 700


def test_lesion_kinds_are_deterministic_with_empty_cases_spread_from_index_zero():
    mix = LesionMix(n_empty=2, small_fraction=0.3)
    kinds = [lesion_kind_for(i, 16, mix) for i in range(16)]
    assert empty_case_indices(16, 2) == {0, 8}
    assert [i for i, k in enumerate(kinds) if k is LesionKind.NONE] == [0, 8]
    assert 3 <= kinds.count(LesionKind.SMALL) <= 5
    assert empty_case_indices(16, 0) == set()


def test_first_case_is_empty_and_every_other_case_has_a_lesion_of_varied_size(demo):
    _, summaries = demo
    assert summaries[0]["lesion_voxels"] == 0
    volumes = [s["lesion_ml"] for s in summaries[1:]]
    assert min(volumes) >= 0.5
    assert min(volumes) < 10 and max(volumes) > 40


def test_lesion_lies_in_one_hemisphere(demo):
    root, summaries = demo
    for summary in summaries[1:]:
        cbf = _canonical(_load(root / summary["paths"]["cbf"]))
        mask = _canonical(_load(root / summary["paths"]["lesion_msk"])) > 0.5
        lr_index = np.arange(cbf.shape[0])[:, None, None]
        head = np.isfinite(cbf)
        midline = (lr_index * head).sum() / head.sum()  # the head is left-right symmetric
        lesion_lr = np.broadcast_to(lr_index, mask.shape)[mask]
        assert (lesion_lr > midline).all() or (lesion_lr < midline).all()


def test_final_infarct_is_not_a_threshold_of_tmax(demo):
    root, summaries = demo
    lesion_with_short_tmax = 0
    for summary in summaries[1:]:
        arrays = _case_arrays(root, summary)
        mask = arrays["lesion_msk"] > 0.5
        hypoperfused = np.nan_to_num(arrays["tmax"]) > 6.0
        assert _dice(mask, hypoperfused) < 0.95
        assert (hypoperfused & ~mask).sum() > 0  # some penumbra is saved
        lesion_with_short_tmax += int((mask & ~hypoperfused).sum())
    assert lesion_with_short_tmax > 0


def test_lesion_physiology_core_penumbra_and_mtt_are_consistent():
    index = 5
    case = generate_case(index, BUILTIN_PROFILES["demo"], np.random.default_rng([SEED, index]))
    grey = case.tissue == Tissue.GREY_MATTER
    cbf, cbv, mtt, tmax = (case.maps[k] for k in ("cbf", "cbv", "mtt", "tmax"))
    normal = grey & (tmax < 4.0)
    relative_cbf = cbf / np.median(cbf[normal])
    relative_cbv = cbv / np.median(cbv[normal])
    core = grey & (relative_cbf < 0.3)
    penumbra = grey & (tmax > 6.0) & (relative_cbf > 0.5) & (relative_cbf < 0.9)
    assert core.sum() > 10 and penumbra.sum() > 10
    assert np.median(relative_cbv[core]) < 0.8  # collapsed blood volume
    assert np.median(relative_cbv[penumbra]) > 0.95  # preserved or raised
    assert np.median(mtt[tmax > 6.0]) > np.median(mtt[normal]) + 1.0
    assert case.lesion_mask[core].mean() > 0.9  # the core is (nearly) always lost


def test_tmax_rule_is_a_fair_but_beatable_baseline(demo):
    root, summaries = demo
    scores = []
    for summary in summaries:
        arrays = _case_arrays(root, summary)
        voxel_ml = float(np.prod(summary["spacing_mm"])) / 1000.0
        predicted = _tmax_rule(arrays["tmax"], voxel_ml)
        mask = arrays["lesion_msk"] > 0.5
        if mask.any():
            scores.append(_dice(predicted, mask))
    assert len(scores) == 15
    assert 0.3 <= np.mean(scores) <= 0.8


def test_one_mask_is_stored_as_scaled_uint16_like_case_0158(demo):
    root, summaries = demo
    for index, summary in enumerate(summaries):
        image = _load(root / summary["paths"]["lesion_msk"])
        if index == 1:
            assert image.get_data_dtype() == np.uint16
            assert image.dataobj.slope == pytest.approx(1.5259e-05, rel=1e-3)
            assert np.asarray(image.dataobj.get_unscaled()).max() == 65535
        else:
            assert image.get_data_dtype() == np.uint8
        values = image.get_fdata()  # scaled: 65535 * 1.5259e-05 is 1 up to float32 rounding
        np.testing.assert_allclose(values, (values > 0.5).astype(float), atol=1e-6)
        assert int((values > 0.5).sum()) == summary["lesion_voxels"]


def test_overwrite_removes_stale_cases_and_refusal_keeps_them(tmp_path):
    write_synthetic_dataset(tmp_path, profile=TINY, seed=1, n_cases=3)
    (tmp_path / "notes.txt").write_text("kept")
    write_synthetic_dataset(tmp_path, profile=TINY, seed=2, n_cases=2)
    assert sorted(p.name for p in (tmp_path / "derivatives").iterdir()) == [
        "sub-stroke0001",
        "sub-stroke0002",
    ]
    assert sorted(p.name for p in (tmp_path / "raw_data").iterdir()) == ["sub-stroke0001", "sub-stroke0002"]
    assert (tmp_path / "notes.txt").read_text() == "kept"
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(tmp_path, profile=TINY, seed=2, n_cases=2, overwrite=False)


def test_parameters_file_matches_built_ins_and_drives_the_writer(tmp_path):
    parameters = yaml.safe_load(PARAMETERS_FILE.read_text())["synthetic"]
    for name, profile in BUILTIN_PROFILES.items():
        assert resolve_profile(name, parameters["profiles"]) == profile
    assert LesionMix.from_mapping(parameters["lesions"]) == LesionMix()
    parameters.update(output_root=str(tmp_path / "out"), n_cases=1, first_case_id=42)
    summaries = write_from_parameters(parameters)
    assert [s["case_id"] for s in summaries] == ["sub-stroke0042"]
    assert (tmp_path / "out" / summaries[0]["paths"]["ncct"]).is_file()
    with pytest.raises(ValueError, match="unknown synthetic profile"):
        resolve_profile("huge", parameters["profiles"])
