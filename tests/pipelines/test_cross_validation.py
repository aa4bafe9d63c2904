"""`kedro run --pipelines cross_validation`: one independent run per fold, and a report over the folds."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import run_kedro
from tiny_project import process_tiny_release

pytestmark = pytest.mark.slow

CV = {
    "data": {"n_folds": 2, "seed": 1},
    "training": {"recipe": "train_test_tiny", "max_steps": 2},
    "evaluation": {"members": 1, "threshold": {"mode": "fixed"}},
}


def cv_params(folds: str) -> dict:
    # Two folds leave none for validation: each fold trains on the other and keeps its last weights.
    return {**CV, "cv": {"name": "tiny", "folds": folds, "val_fold": "none"}}


@pytest.fixture
def processed(project_copy):
    project = process_tiny_release(project_copy)
    run_kedro(project, "splits", {"data": CV["data"]})  # two folds for this test
    return project


def test_two_fold_cross_validation_run_by_subsets_and_reported_over_all_folds(processed, tmp_path):
    report_dir = processed / "data/08_reporting/cv_tiny"
    folds = pd.read_csv(processed / "data/05_model_input/case_folds.csv")

    run_kedro(processed, "cross_validation", cv_params("0"))  # a subset: fold 0 only
    summary = json.loads((report_dir / "cv_summary.json").read_text())
    assert summary["folds_evaluated"] == [0] and summary["folds_missing"] == [1]
    assert "missing: 1" in (report_dir / "cv_report.md").read_text()

    run_kedro(processed, "cross_validation", cv_params("1"))  # the other fold; the report covers both
    summary = json.loads((report_dir / "cv_summary.json").read_text())
    assert summary["folds_evaluated"] == [0, 1] and summary["folds_missing"] == []
    assert [r["run_name"] for r in summary["launched_now"]] == ["cv_tiny_fold1"]

    # Every case is tested exactly once, in its own fold, for the model and both rules.
    pooled = pd.read_csv(report_dir / "cv_case_metrics.csv")
    methods = {"model", "threshold_rule_tmax6", "threshold_rule_tmax6_rcbf30"}
    assert set(pooled["method"]) == methods
    for method in methods:
        rows = pooled[pooled["method"] == method].set_index("case_id")
        assert sorted(rows.index) == sorted(folds["case_id"])
        assert (rows["fold"] == folds.set_index("case_id").loc[rows.index, "fold"]).all()

    # Per-fold means come from each fold's own evaluation; mean ± SD is over the fold means.
    per_fold = pd.read_csv(report_dir / "cv_fold_metrics.csv").set_index(["fold", "method"])
    dice = []
    for k in (0, 1):
        own = pd.read_csv(processed / f"data/08_reporting/cv_tiny_fold{k}/case_metrics.csv")
        expected = own.loc[own["method"] == f"cv_tiny_fold{k}", "dice"].mean()
        assert per_fold.loc[(k, "model"), "dice"] == pytest.approx(expected)
        dice.append(expected)
    model = next(m for m in summary["methods"] if m["method"] == "model")
    assert model["dice_mean"] == pytest.approx(np.mean(dice))
    assert model["dice_sd"] == pytest.approx(np.std(dice, ddof=1))
    assert {"dice_by_fold.png", "volumes_all_folds.png"} <= {p.name for p in (report_dir / "figures").iterdir()}

    # A fold that exists is not trained over; cv.folds=none only rebuilds the report.
    with pytest.raises(Exception, match=r"runs \['cv_tiny_fold0'\] already exist"):
        run_kedro(processed, "cross_validation", cv_params("0"))
    (report_dir / "cv_report.md").unlink()
    run_kedro(processed, "cross_validation", cv_params("none"))
    assert "Folds evaluated: 0, 1 of 2" in (report_dir / "cv_report.md").read_text()

    # MLflow: each cross-validation `kedro run` is a parent; each fold run its child, holding the fold's
    # model run (training curves, test metrics) in turn.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")
    fold_runs = {r.data.tags["isles_diffseg_cv_fold"]: r for r in runs if "isles_diffseg_cv_fold" in r.data.tags}
    assert set(fold_runs) == {"0", "1"}
    by_id = {r.info.run_id: r for r in runs}
    for fold, run in fold_runs.items():
        assert run.info.run_name == f"cv_tiny_fold{fold}" and run.info.status == "FINISHED"
        parent = by_id[run.data.tags["mlflow.parentRunId"]]
        assert parent.data.params["cv.folds"] == fold
        assert parent.data.metrics["cv_model_dice_mean"] == pytest.approx(
            np.mean(dice) if fold == "1" else dice[0])
        model_run = next(r for r in runs if r.data.tags.get("isles_diffseg_run_name") == f"cv_tiny_fold{fold}")
        assert model_run.data.tags["mlflow.parentRunId"] == run.info.run_id
        assert "test_model_dice_mean" in model_run.data.metrics
