"""Scoring cases in a process pool gives the table a serial loop gives."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_case

from isles_diffseg.data.case_store import CaseStore, write_case_store
from isles_diffseg.data.case_volume import preprocess_case
from isles_diffseg.data.discovery import discover_cases
from isles_diffseg.evaluation.native_grid import read_native_mask
from isles_diffseg.evaluation.settings import scoring_workers
from isles_diffseg.pipelines.evaluation.nodes import score_cases

BASELINE = {"cbf": [0, 70], "tmax": [4, 30]}
EVALUATION = {"baselines": {"threshold_rules": True, "tmax_threshold_s": 6.0, "rcbf_threshold": 0.3,
                            "min_component_ml": 0.0}}


@pytest.fixture(scope="module")
def scored_inputs(tmp_path_factory) -> tuple[dict, CaseStore, pd.DataFrame]:
    """Three ingested tiny cases and predictions saved as NIfTI: the ground truth itself, the ground truth
    with its first lesion voxel-row removed, and an empty mask."""
    tmp = tmp_path_factory.mktemp("scoring")
    for number in (1, 2, 3):
        write_tiny_case(tmp / "release", number, seed=number)
    write_case_store(tmp / "cases", {f.case_id: (lambda f=f: preprocess_case(f, ["cbf", "tmax"], BASELINE))
                                     for f in discover_cases(tmp / "release")})
    cases = CaseStore(tmp / "cases")
    predictions = {}
    for meta in cases.metas():
        gt, _ = read_native_mask(meta["mask_file"])
        pred = {"sub-stroke0001": gt, "sub-stroke0002": np.where(np.arange(gt.shape[0])[:, None, None] == np.argmax(
            gt.any(axis=(1, 2))), 0, gt), "sub-stroke0003": np.zeros_like(gt)}[meta["case_id"]]
        path = tmp / "pred" / f"{meta['case_id']}_pred.nii.gz"
        path.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(pred.astype(np.uint8), np.asarray(meta["native_affine"])), str(path))
        predictions[f"{meta['case_id']}_pred"] = lambda path=path: nib.load(str(path))  # as PartitionedDataset
    folds = pd.DataFrame({"case_id": ["sub-stroke0001", "sub-stroke0002", "sub-stroke0003"], "fold": [0, 1, 0]})
    return predictions, cases, folds


def _table(scored_inputs, workers) -> pd.DataFrame:
    predictions, cases, folds = scored_inputs
    return score_cases(predictions, {"run_name": "m"}, cases, folds, {**EVALUATION, "scoring_workers": workers}).data


def test_parallel_scoring_gives_the_serial_table(scored_inputs):
    serial, parallel = _table(scored_inputs, 1), _table(scored_inputs, 3)
    pd.testing.assert_frame_equal(parallel, serial)
    # 3 cases x (model + 2 threshold rules), in case order; the hand-made predictions score as made
    assert len(serial) == 9 and list(serial["case_id"][::3]) == ["sub-stroke0001", "sub-stroke0002", "sub-stroke0003"]
    model = serial[serial["method"] == "m"].set_index("case_id")
    assert model.loc["sub-stroke0001", "dice"] == 1.0
    assert 0 < model.loc["sub-stroke0002", "dice"] < 1 and model.loc["sub-stroke0002", "precision"] == 1.0
    assert model.loc["sub-stroke0003", "dice"] == 0.0 and list(model["fold"]) == [0, 1, 0]


@pytest.mark.parametrize(("setting", "cases", "cpus", "voxels", "expected"),
                         [("auto", 10, 16, None, 10), ("auto", 40, 16, None, 16), ("auto", 0, 16, None, 1),
                          ("auto", 10, 16, 10 * 512 * 512 * 80, 10),  # ten realistic cases: a pool
                          ("auto", 4, 2, 4 * 128 * 128 * 40, 1),  # the CPU demo's small volumes: in this process
                          (1, 10, 16, None, 1), ("4", 10, 2, 4 * 128 * 128 * 40, 4)])
def test_scoring_workers_auto_is_one_per_case_up_to_the_cpus(setting, cases, cpus, voxels, expected):
    assert scoring_workers(setting, cases, cpus, voxels) == expected


@pytest.mark.parametrize("setting", [0, -1, "many", True])
def test_scoring_workers_refuses_what_is_not_a_count(setting):
    with pytest.raises(ValueError, match="scoring_workers must be auto or an integer >= 1"):
        scoring_workers(setting, 10, 4)

