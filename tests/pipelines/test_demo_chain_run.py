"""The whole demo chain (`kedro run`) at test size: synthetic data -> training -> evaluation -> comparison."""

from __future__ import annotations

import json
import shutil

import mlflow
import nbformat
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT_ROOT, run_kedro
from nbclient import NotebookClient

from isles_diffseg.baselines.threshold_rule import remove_small_components

pytestmark = pytest.mark.slow

TINY = {
    "synthetic": {"n_cases": 8},
    "data": {"n_folds": 4},
    "slicing": {"image_size": 32},
    "training": {"recipe": "train_test_tiny", "run_name": "tiny_diffusion"},
    "unet_baseline": {"training": {"recipe": "train_test_tiny", "run_name": "tiny_unet"}},
    # min_component_ml: every component of the 6-step model's masks is smaller, so the written masks must be
    # empty where the thresholded probability maps are not (the setting reaches the prediction node)
    "evaluation": {"members": 2, "threshold": {"mode": "sweep", "candidates": [0.3, 0.5]}, "min_component_ml": 1e5},
}


def test_default_pipeline_runs_end_to_end_and_tracks_everything_in_mlflow(project_copy, tmp_path):
    # The nested `unet_baseline.training` block of runtime params must merge with the YAML one.
    run_kedro(project_copy, "__default__", TINY)

    run_dir = project_copy / "data/06_models/tiny_diffusion"
    assert (run_dir / "checkpoints/best.pt").is_file() and (run_dir / "checkpoints/latest.pt").is_file()
    training_run = json.loads((run_dir / "training_run.json").read_text())  # the finished-run record
    assert training_run["run_name"] == "tiny_diffusion" and training_run["steps"] == 6
    assert training_run["key"] == "training_run"
    assert json.loads((project_copy / "data/06_models/tiny_unet/training_run.json").read_text())["key"] == "unet_baseline"

    folds = pd.read_csv(project_copy / "data/05_model_input/case_folds.csv")
    test_cases = sorted(folds.loc[folds["fold"] == 0, "case_id"])  # data.fold (default 0) is the test fold
    predictions = project_copy / "data/07_model_output/tiny_diffusion"
    threshold = json.loads((project_copy / "data/08_reporting/tiny_diffusion/threshold_selection.json").read_text())[
        "threshold"]
    filtered_cases = 0
    for case_id in test_cases:
        pred = nib.load(str(predictions / f"{case_id}_pred.nii.gz"))
        source = nib.load(str(next((project_copy / "data/01_raw/isles24_synthetic/derivatives").glob(
            f"{case_id}/ses-02/*lesion-msk.nii.gz"))))
        assert pred.shape == source.shape and np.allclose(pred.affine, source.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
        # the mask is the thresholded probability map without its components under evaluation.min_component_ml
        thresholded = np.asarray(nib.load(str(predictions / f"{case_id}_prob.nii.gz")).dataobj) >= threshold
        expected = remove_small_components(thresholded, pred.header.get_zooms()[:3], 1e5)
        np.testing.assert_array_equal(np.asarray(pred.dataobj).astype(bool), expected)
        filtered_cases += int((expected != thresholded).any())
    assert filtered_cases > 0
    assert "under 100000 mL removed" in (project_copy / "data/08_reporting/tiny_diffusion/report.md").read_text()

    report_dir = project_copy / "data/08_reporting/tiny_diffusion"
    metrics = pd.read_csv(report_dir / "case_metrics.csv")
    assert set(metrics["method"]) == {"tiny_diffusion", "threshold_rule_tmax6", "threshold_rule_tmax6_rcbf30"}
    assert sorted(metrics["case_id"].unique()) == test_cases
    assert {"overlays.png", "dice_distribution.png", "volumes.png"} <= {p.name for p in (report_dir / "figures").iterdir()}
    assert "Model vs baselines" in (report_dir / "report.md").read_text()
    selection = json.loads((report_dir / "threshold_selection.json").read_text())
    assert selection["threshold"] in (0.3, 0.5) and set(selection["val_cases"]).isdisjoint(test_cases)

    comparison = pd.read_csv(project_copy / "data/08_reporting/comparison.csv")
    assert {"tiny_diffusion", "tiny_unet", "threshold_rule_tmax6"} <= set(comparison["method"])

    # One MLflow run for the `kedro run`, and one child run per trained model holding its parameters,
    # training curves, checkpoint and evaluation.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {r.data.tags.get("isles_diffseg_run_name"): r
            for r in mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")}
    assert set(runs) == {None, "tiny_diffusion", "tiny_unet"}
    parent = runs[None]
    assert parent.data.params["training.model"] == "medsegdiff_tiny_cpu"
    for name, model in (("tiny_diffusion", "medsegdiff_tiny_cpu"), ("tiny_unet", "unet_baseline_tiny_cpu")):
        child = runs[name]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert child.data.params["run_name"] == name and child.data.params["variant.model"] == model
        for key in ("train_loss", "train_lr", "train_grad_norm", "train_images_per_s", "val_dice_3d",
                    "test_model_dice_mean", "test_rule_tmax6_dice_mean", "test_threshold"):
            assert key in child.data.metrics, (name, key)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["tiny_diffusion"].info.run_id, "evaluation")}
    assert "evaluation/report.md" in artifacts

    # The notebooks run headless on the same tiny project (stored without outputs), and the results
    # notebook shows this run: its MLflow curves, and tables with the model and both threshold rules.
    shutil.copytree(PROJECT_ROOT / "notebooks", project_copy / "notebooks")
    executed = {}
    for path in sorted((project_copy / "notebooks").glob("*.ipynb")):
        stored = nbformat.read(PROJECT_ROOT / "notebooks" / path.name, as_version=4)
        assert all(not cell.get("outputs") for cell in stored.cells if cell.cell_type == "code"), path.name
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        executed[path.name] = notebook
    shown = _shown_by_tag(executed["02_results.ipynb"])
    curves = runs["tiny_diffusion"].info.run_id
    assert f"training curves of tiny_diffusion: MLflow run {curves}" in shown["training-curves"]["text"]
    assert shown["training-curves"]["images"] == 1
    methods = ("tiny_diffusion", "threshold_rule_tmax6", "threshold_rule_tmax6_rcbf30")
    for tag in ("model-vs-baselines", "case-dice"):
        assert all(method in shown[tag]["text"] for method in methods), (tag, shown[tag]["text"])
    for case_id in test_cases:
        assert case_id in shown["case-dice"]["text"]
    assert "tiny_unet" in shown["all-runs"]["text"] and "tiny_diffusion" in shown["all-runs"]["text"]


def _shown_by_tag(notebook) -> dict[str, dict]:
    """What each tagged cell displays: its printed and plain-text output, and how many images."""
    shown = {}
    for cell in notebook.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            text, images = [], 0
            for output in cell.get("outputs", []):
                text.append(output.get("text", ""))
                text.append(output.get("data", {}).get("text/plain", ""))
                images += "image/png" in output.get("data", {})
            shown[tag] = {"text": "\n".join(text), "images": images}
    return shown
