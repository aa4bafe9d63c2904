"""`python -m isles_diffseg.campaign grid` through submitit's local executor, on the tiny project."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from tiny_project import process_tiny_release

from isles_diffseg.campaign.__main__ import main

pytestmark = pytest.mark.slow

# Two steps of the tiny model and a fixed threshold keep each of the 8 runs to a few seconds of work.
GRID = ("training.loss=mse_loss_only|mse_with_aux_demo,training.optimizer=adamw_1e3lr_wd1e4|adamw_1e4lr_wd00,"
        "training.recipe=train_test_tiny,training.max_steps=2,evaluation.members=1,evaluation.threshold.mode=fixed,"
        "data.n_folds=3,data.seed=1")


def test_two_by_two_grid_on_two_folds_runs_every_run_and_reports_four_configurations(project_copy, tmp_path):
    project = process_tiny_release(project_copy)
    args = ["grid", "--name", "g", "--params", GRID, "--folds", "0-1", "--executor", "local", "--gpus", "0",
            "--parallel", "2", "--project-dir", str(project)]
    assert main(args) == 0

    folder = project / "data/08_reporting/campaign_g"
    manifest = json.loads((folder / "campaign.json").read_text())
    names = [f"g_c{c:02d}_fold{k}" for c in range(4) for k in (0, 1)]
    assert [r["run_name"] for r in manifest["runs"]] == names
    assert [j["state"] for j in manifest["jobs"]] == ["COMPLETED"] * 8
    for name in names:  # each run trained (finished-run record) and was evaluated on its own test fold
        assert (project / "data/06_models" / name / "training_run.json").is_file()
        metrics = pd.read_csv(project / "data/08_reporting" / name / "case_metrics.csv")
        assert name in set(metrics["method"])
    config = json.loads((project / "data/06_models/g_c02_fold1/config.json").read_text())
    assert config["names"]["loss"] == "mse_with_aux_demo" and config["names"]["optimizer"] == "adamw_1e3lr_wd1e4"
    assert config["extra"]["split"]["test_fold"] == 1

    summary = pd.read_csv(folder / "campaign_summary.csv")
    configurations = summary[summary["method"].str.match(r"^c\d\d$")]
    assert sorted(configurations["method"]) == ["c00", "c01", "c02", "c03"]
    assert (configurations["n_folds"] == 2).all()
    assert {"threshold_rule_tmax6", "threshold_rule_tmax6_rcbf30"} <= set(summary["method"])
    # mean and SD over the two folds' means, from the runs' own evaluations
    per_fold = pd.read_csv(folder / "campaign_fold_metrics.csv").set_index(["fold", "method"])
    dice = [pd.read_csv(project / f"data/08_reporting/g_c01_fold{k}/case_metrics.csv").query(
        f"method == 'g_c01_fold{k}'")["dice"].mean() for k in (0, 1)]
    assert per_fold.loc[(0, "c01"), "dice"] == pytest.approx(dice[0])
    row = configurations.set_index("method").loc["c01"]
    assert row["dice_mean"] == pytest.approx(sum(dice) / 2)
    assert row["dice_sd"] == pytest.approx(pd.Series(dice).std(ddof=1))
    assert "loss=mse_loss_only, optimizer=adamw_1e4lr_wd00" in row["label"]
    report = (folder / "campaign_report.md").read_text()
    assert "Runs evaluated: 8 of 8" in report and (folder / "figures/metric_by_configuration.png").is_file()

    # MLflow: one parent, one finished child per run holding the model's run; the table in the parent
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")
    parent = [r for r in runs if r.data.tags.get("isles_diffseg_campaign_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("isles_diffseg_campaign_role") == "run"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == sorted(names)
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
               for r in children)
    model_runs = [r for r in runs if r.data.tags.get("isles_diffseg_run_name") in names]
    assert len(model_runs) == 8 and all("test_model_dice_mean" in r.data.metrics for r in model_runs)
    assert parent[0].data.metrics["campaign_c01_dice_mean"] == pytest.approx(sum(dice) / 2)

    # the same command again continues the campaign: nothing is trained twice, no MLflow run is added
    stamps = {n: (project / "data/06_models" / n / "training_run.json").stat().st_mtime for n in names}
    assert main(args) == 0
    assert stamps == {n: (project / "data/06_models" / n / "training_run.json").stat().st_mtime for n in names}
    again = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")
    assert len(again) == len(runs)
