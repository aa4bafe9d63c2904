"""Threshold choice, native-grid write-back, run-scoped artifacts and the comparison table."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.data.slicing import SliceGeometry, mask_to_slices
from isles_diffseg.datasets.run_scoped_dataset import RunArtifact, RunScopedDataset
from isles_diffseg.evaluation.native_grid import to_native
from isles_diffseg.evaluation.report import metric_table, summarise_methods
from isles_diffseg.metrics.threshold_selection import best_threshold, grid_edge_note, sweep_thresholds
from isles_diffseg.pipelines.comparison.nodes import comparison_table


def test_threshold_sweep_picks_the_best_mean_dice_and_prefers_half_on_ties():
    gt = {"a": np.array([[1, 1, 0, 0]], np.uint8), "b": np.array([[0, 1, 1, 0]], np.uint8)}
    prob = {"a": np.array([[0.9, 0.35, 0.3, 0.1]]), "b": np.array([[0.1, 0.8, 0.45, 0.2]])}
    sweep = sweep_thresholds(prob, gt, [0.2, 0.4, 0.5, 0.6])
    # at 0.4: case a keeps 1 of its 2 voxels (Dice 2/3), case b is exact (Dice 1)
    assert sweep.set_index("threshold").loc[0.4, "mean_dice_3d"] == pytest.approx(5 / 6)
    assert best_threshold(sweep) == 0.4
    flat = pd.DataFrame({"threshold": [0.3, 0.5, 0.7], "mean_dice_3d": [0.8, 0.8, 0.8]})
    assert best_threshold(flat) == 0.5
    with pytest.raises(ValueError, match="no validation case"):
        sweep_thresholds({}, {}, [0.5])


def test_native_write_back_keeps_the_case_affine_and_grid():
    affine = np.array([[-0.7, 0, 0, 10], [0, -0.7, 0, 20], [0, 0, 2.0, -30], [0, 0, 0, 1]])
    native = NativeGeometry(affine, (30, 26, 5))
    truth = np.zeros((30, 26, 5), np.uint8)
    truth[5:15, 8:20, 1:4] = 1
    canonical = native.to_canonical(truth)
    geometry = SliceGeometry.plan(canonical.shape, 30)  # padded size: no resampling
    prob = mask_to_slices(canonical, geometry).astype(np.float32) * 0.9
    result = to_native("c", prob, np.zeros_like(prob), geometry, native, threshold=0.5)
    np.testing.assert_array_equal(result.mask, truth)
    images = result.images()
    assert set(images) == {"c_pred", "c_prob", "c_uncertainty"}
    assert np.allclose(images["c_pred"].affine, affine) and images["c_pred"].shape == truth.shape
    assert images["c_pred"].get_data_dtype() == np.uint8


def test_components_under_the_minimum_volume_leave_the_mask_but_not_the_probability_map():
    # native voxels of 1 x 2 x 4 mm = 8 uL: the 5 x 5 x 5 block holds 125 voxels = 1.0 mL, the 2 x 2 x 1 blob
    # 4 voxels = 0.032 mL; the voxel size is the affine's (diagonal with a flip, as the header's zooms)
    affine = np.diag([-1.0, 2.0, 4.0, 1.0])
    native = NativeGeometry(affine, (20, 20, 8))
    truth = np.zeros((20, 20, 8), np.uint8)
    truth[2:7, 2:7, 1:6] = 1
    blob = np.zeros_like(truth)
    blob[15:17, 15:17, 3] = 1
    canonical = native.to_canonical(truth | blob)
    geometry = SliceGeometry.plan(canonical.shape, 20)  # no resampling
    prob = mask_to_slices(canonical, geometry).astype(np.float32) * 0.9
    kept_all = to_native("c", prob, np.zeros_like(prob), geometry, native, threshold=0.5)
    np.testing.assert_array_equal(kept_all.mask, truth | blob)
    for minimum in (0.05, 0.99):  # the blob is under both; the 1 mL block stays
        filtered = to_native("c", prob, np.zeros_like(prob), geometry, native, 0.5, min_component_ml=minimum)
        np.testing.assert_array_equal(filtered.mask, truth)
        np.testing.assert_array_equal(filtered.probability, kept_all.probability)
    gone = to_native("c", prob, np.zeros_like(prob), geometry, native, 0.5, min_component_ml=1.01)
    assert not gone.mask.any()
    assert native.zooms() == (1.0, 2.0, 4.0)


def test_run_scoped_dataset_writes_one_folder_per_run_and_loads_the_run_it_saved(tmp_path):
    runs = {"path": str(tmp_path / "runs")}
    dataset = RunScopedDataset(str(tmp_path), "summary.json", {"type": "json.JSONDataset"}, latest_of=runs)
    dataset.save(RunArtifact("run_a", {"dice": 0.1}))
    dataset.save(RunArtifact("run_b", {"dice": 0.2}))
    assert (tmp_path / "run_a" / "summary.json").is_file() and dataset.load() == {"dice": 0.2}
    with pytest.raises(Exception, match="expected a RunArtifact"):
        dataset.save({"dice": 0.3})
    with pytest.raises(ValueError, match="relative to the run folder"):
        RunScopedDataset(str(tmp_path), "/abs.json", {"type": "json.JSONDataset"}, latest_of=runs)
    # a later session (a notebook) names the run it wants
    named = RunScopedDataset(str(tmp_path), "summary.json", {"type": "json.JSONDataset"}, latest_of=runs, run="run_a")
    assert named.load() == {"dice": 0.1}


def test_prediction_folder_round_trip(tmp_path):
    dataset = RunScopedDataset(str(tmp_path), "", {"type": "partitions.PartitionedDataset",
                                                  "dataset": "isles_diffseg.datasets.NiftiDataset",
                                                  "filename_suffix": ".nii.gz"},
                               latest_of={"path": str(tmp_path / "runs")}, path_argument="path")
    image = nib.Nifti1Image(np.ones((2, 3, 4), np.uint8), np.diag([0.5, 0.5, 2, 1]))
    dataset.save(RunArtifact("run", {"case_pred": lambda: image}))
    loaded = dataset.load()
    assert (tmp_path / "run" / "case_pred.nii.gz").is_file()
    assert np.asarray(loaded["case_pred"]().dataobj).sum() == 24


def _summary(run, dice_model, dice_rule, n=4):
    rows = [{"method": run, "case_id": f"c{i}", "dice": dice_model} for i in range(n)]
    rows += [{"method": "threshold_rule_tmax6", "case_id": f"c{i}", "dice": dice_rule} for i in range(n)]
    table = pd.DataFrame(rows)
    for column in ("abs_volume_diff_ml", "abs_lesion_count_diff", "lesion_f1", "dice_2d_lesion", "dice_2d_all",
                   "hd95_mm", "precision", "recall", "gt_volume_ml", "pred_volume_ml"):
        table[column] = 0.5
    methods = summarise_methods(table)
    return {"run_name": run, "threshold": 0.5, "details": {"fold": 0}, "methods": methods,
            "table": metric_table(methods).to_dict("records")}


def test_comparison_lists_each_run_once_and_a_shared_baseline_once():
    table = comparison_table([_summary("diffusion", 0.7, 0.5), _summary("unet", 0.6, 0.5)])
    assert list(table["method"]) == ["diffusion", "unet", "threshold_rule_tmax6"]
    assert list(table["kind"]) == ["model", "model", "baseline"]
    assert table.loc[0, "dice_mean"] == pytest.approx(0.7)


def test_metric_table_shows_mean_and_sd():
    summary = _summary("m", 0.7, 0.5)
    table = metric_table(summary["methods"])
    assert table.loc[table["method"] == "m", "Dice 3D"].item() == "0.700 ± 0.000"


def test_a_threshold_chosen_at_the_edge_of_the_grid_while_dice_still_rises_is_flagged():
    # round 12's sweep (input scale 0.3, fold 0): still rising from 0.7 to 0.8, the last candidate
    rising = pd.DataFrame({"threshold": [0.2, 0.5, 0.7, 0.8], "mean_dice_3d": [0.527, 0.568, 0.589, 0.593]})
    note = grid_edge_note(rising, best_threshold(rising))
    assert note is not None and "0.8, its largest candidate" in note and "0.7: 0.589 -> 0.8: 0.593" in note
    falling = rising.assign(mean_dice_3d=rising["mean_dice_3d"][::-1].to_numpy())
    assert "0.2, its smallest candidate" in grid_edge_note(falling, best_threshold(falling))
    peaked = pd.DataFrame({"threshold": [0.6, 0.7, 0.8], "mean_dice_3d": [0.57, 0.575, 0.566]})  # round 11
    assert grid_edge_note(peaked, best_threshold(peaked)) is None
    flat = pd.DataFrame({"threshold": [0.3, 0.5, 0.7], "mean_dice_3d": [0.8, 0.8, 0.8]})
    assert grid_edge_note(flat, best_threshold(flat)) is None
