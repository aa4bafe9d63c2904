"""Folds are numbered once (`splits`); which fold is held out is chosen when training/evaluation run."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from conftest import run_kedro
from tiny_project import DATA, process_tiny_release

pytestmark = pytest.mark.slow


@pytest.fixture
def processed(project_copy):
    return process_tiny_release(project_copy)


def tiny_training(run_name: str, fold: int) -> dict:
    return {"data": {**DATA, "fold": fold}, "training": {"recipe": "train_test_tiny", "max_steps": 2, "run_name": run_name}}


def test_changing_data_fold_changes_the_cases_without_rerunning_splits(processed, tmp_path):
    folds_file = processed / "data/05_model_input/case_folds.csv"
    folds = pd.read_csv(folds_file)
    assert "role" not in folds and sorted(set(folds["fold"])) == [0, 1, 2]
    written = folds_file.stat().st_mtime_ns

    run_kedro(processed, "training", tiny_training("fold0", 0))
    run_kedro(processed, "training", tiny_training("fold1", 1))
    assert folds_file.stat().st_mtime_ns == written  # splits did not run again

    splits = {}
    for name, fold in (("fold0", 0), ("fold1", 1)):
        config = json.loads((processed / f"data/06_models/{name}/config.json").read_text())
        split = splits[name] = config["extra"]["split"]
        assert (split["n_folds"], split["test_fold"], split["val_fold"]) == (3, fold, (fold + 1) % 3)
        assert split["test_cases"] == sorted(folds.loc[folds["fold"] == fold, "case_id"])
        assert split["val_cases"] == sorted(folds.loc[folds["fold"] == (fold + 1) % 3, "case_id"])
        assert split["n_train_cases"] == int((folds["fold"] == (fold + 2) % 3).sum())
    assert splits["fold0"]["test_cases"] != splits["fold1"]["test_cases"]

    # MLflow: the `kedro run` logs data.fold, the model's child run its split.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")
    child = next(r for r in runs if r.data.tags.get("isles_diffseg_run_name") == "fold1")
    assert child.data.params["extra.split.test_fold"] == "1" and child.data.params["extra.split.val_fold"] == "2"
    parent = next(r for r in runs if r.info.run_id == child.data.tags["mlflow.parentRunId"])
    assert parent.data.params["data.fold"] == "1"


def test_evaluation_uses_the_run_folds_and_refuses_others(processed):
    run_kedro(processed, "training", tiny_training("fold2", 2))
    evaluation = {"run": "fold2", "members": 1, "threshold": {"mode": "fixed"}}
    with pytest.raises(Exception, match=r"trained with \(data.n_folds, data.fold, data.val_fold\) = \(3, 2, 0\)"):
        run_kedro(processed, "evaluation", {"data": {**DATA, "fold": 0}, "evaluation": evaluation})

    run_kedro(processed, "evaluation", {"data": {**DATA, "fold": 2}, "evaluation": evaluation})
    folds = pd.read_csv(processed / "data/05_model_input/case_folds.csv")
    metrics = pd.read_csv(processed / "data/08_reporting/fold2/case_metrics.csv")
    assert sorted(metrics["case_id"].unique()) == sorted(folds.loc[folds["fold"] == 2, "case_id"])
    assert set(metrics["fold"]) == {2}
    details = json.loads((processed / "data/08_reporting/fold2/summary.json").read_text())["details"]
    assert (details["fold"], details["val_fold"], details["n_folds"]) == (2, 0, 3)
    assert details["data_root"] == str(processed / "release")
    assert "test fold 2, validation fold 0 of 3" in (processed / "data/08_reporting/fold2/report.md").read_text()


def test_case_folds_made_with_another_fold_count_are_refused_with_the_fix():
    from isles_diffseg.data.folds import roles_for_run

    folds = pd.DataFrame({"case_id": ["a", "b", "c"], "fold": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"case_folds holds 3 folds but data.n_folds=5; re-run `kedro run --pipelines "
                                         r"splits --params data.n_folds=5`"):
        roles_for_run(folds, {"n_folds": 5, "fold": 0, "val_fold": None})
    roles = roles_for_run(folds, {"n_folds": 3, "fold": 2, "val_fold": 0})
    assert list(roles["role"]) == ["val", "train", "test"]
    assert list(roles_for_run(folds, {"n_folds": 3, "fold": 2, "val_fold": None})["role"]) == ["val", "train", "test"]
    # `none`: no validation fold (2-fold cross-validation); every other fold trains
    assert list(roles_for_run(folds, {"n_folds": 3, "fold": 1, "val_fold": "none"})["role"]) == ["train", "test", "train"]
