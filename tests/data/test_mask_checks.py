"""Implausible lesion masks are used, but flagged in the manifest and the log."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, write_tiny_case

from isles_diffseg.data.case_store import CaseStore, write_case_store
from isles_diffseg.data.case_volume import preprocess_case
from isles_diffseg.data.discovery import discover_cases
from isles_diffseg.data.mask_checks import mask_warnings
from isles_diffseg.datasets.isles24_root_dataset import Isles24Root
from isles_diffseg.pipelines.ingestion.nodes import build_case_manifest

BASELINE = {"cbf": [0, 70], "tmax": [4, 30]}


def _check(scaled, brain=None):
    scaled = np.asarray(scaled, dtype=np.float32)
    brain = np.ones_like(scaled, dtype=np.uint8) if brain is None else brain
    return mask_warnings(scaled, (np.nan_to_num(scaled) > 0.5).astype(np.uint8), brain, threshold=0.5)


def test_a_binary_mask_with_a_plausible_lesion_has_no_warning():
    assert _check([1, 0, 0, 0]) == []
    assert _check([65535 * 1.5259e-05, 0, 0, 0]) == []  # scaled uint16 reads as 1.00002
    assert _check([1, 1, 0, 0]) == []  # exactly half the brain is still plausible


def test_values_other_than_zero_and_one_after_scaling_are_listed():
    (finding,) = _check([0, 255, 255, 0, 0, 0])
    assert finding == "mask has 2 voxels with values other than 0/1 after scaling (255); binarised at > 0.5"
    (finding,) = _check([0.3, 0.7, 0, 0, np.nan, 0])
    assert finding.startswith("mask has 3 voxels with values other than 0/1 after scaling (0.3, 0.7, nan)")


def test_a_lesion_larger_than_half_the_brain_is_flagged():
    brain = np.array([1, 1, 1, 1, 0, 0], dtype=np.uint8)
    (finding,) = _check([1, 1, 1, 0, 0, 0], brain)
    assert finding == "lesion of 3 voxels covers 75% of the 4 brain voxels (more than 50%): check the mask"


def test_an_all_ones_mask_is_ingested_with_a_manifest_warning_and_a_log_line(tmp_path, caplog):
    release = tmp_path / "release"
    write_tiny_case(release, 1, seed=1)
    paths = write_tiny_case(release, 2, seed=2)
    mask = nib.load(str(paths["mask"]))
    nib.save(nib.Nifti1Image(np.full(mask.shape, 2, np.uint8), LPS_AFFINE), str(paths["mask"]))

    with caplog.at_level(logging.WARNING):
        cases = {f.case_id: (lambda f=f: preprocess_case(f, ["cbf", "tmax"], BASELINE)) for f in discover_cases(release)}
        write_case_store(tmp_path / "cases", cases)
        manifest = build_case_manifest(CaseStore(tmp_path / "cases"), Isles24Root(release)).set_index("case_id")

    assert manifest.loc["sub-stroke0001", "mask_warnings"] == ""
    warning = manifest.loc["sub-stroke0002", "mask_warnings"]
    n = int(np.prod(mask.shape))
    assert f"mask has {n} voxels with values other than 0/1 after scaling (2)" in warning
    assert "lesion of " in warning and "check the mask" in warning
    assert manifest.loc["sub-stroke0002", "status"] == "ok"  # used anyway: the warning asks for a look
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("sub-stroke0002: lesion of ") for m in logged)
    assert any("1 of 2 cases have an implausible lesion mask" in m and "sub-stroke0002" in m for m in logged)


@pytest.mark.parametrize("fraction", [0.51, 0.9])
def test_the_half_brain_limit_is_strict(fraction):
    brain = np.ones(100, dtype=np.uint8)
    scaled = (np.arange(100) < fraction * 100).astype(np.float32)
    assert len(_check(scaled, brain)) == 1
