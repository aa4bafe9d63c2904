"""`python -m isles_diffseg.campaign optuna`: a study of three tiny trials, one pruned at a validation step."""

from __future__ import annotations

import json

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from tiny_project import process_tiny_release

from isles_diffseg.campaign.__main__ import main

pytestmark = pytest.mark.slow

# The tiny recipe validates every 3 steps and at the last step. With a Dice threshold no run can reach (2.0)
# after a warm-up of 4 steps, the pruner decides by step alone: the 2- and 3-step trials validate before step
# 4 and complete, the 6-step trial is pruned at its step-6 validation, whatever the Dice values are.
SPACE = {
    "sampler": {"type": "grid", "seed": 0},
    "pruner": {"type": "threshold", "lower": 2.0, "n_warmup_steps": 4},
    "fixed": {"training.recipe": "train_test_tiny", "evaluation.members": 1, "evaluation.threshold.mode": "fixed",
              "data.n_folds": 3, "data.seed": 1},
    "params": {"training.max_steps": {"type": "categorical", "choices": [2, 3, 6]}},
}


def test_study_of_three_trials_prunes_one_at_a_validation_step(project_copy, tmp_path):
    project = process_tiny_release(project_copy)
    space = tmp_path / "tiny_steps.yml"
    space.write_text(yaml.safe_dump(SPACE))
    assert main(["optuna", "--space", str(space), "--trials", "3", "--executor", "local", "--gpus", "0",
                 "--project-dir", str(project)]) == 0

    folder = project / "data/08_reporting/campaign_tiny_steps"
    manifest = json.loads((folder / "campaign.json").read_text())
    study = optuna.load_study(study_name="tiny_steps", storage=manifest["storage"])
    trials = {t.params["training.max_steps"]: t for t in study.trials}
    assert sorted(trials) == [2, 3, 6]
    assert {steps: t.state.name for steps, t in trials.items()} == {2: "COMPLETE", 3: "COMPLETE", 6: "PRUNED"}
    assert sorted(trials[6].intermediate_values) == [3, 6]  # reported at each validation, pruned at the second
    runs = project / "data/06_models"
    for steps in (2, 3):  # the objective is the run's best validation Dice (validation fold), as trained
        name = trials[steps].user_attrs["run_name"]
        record = json.loads((runs / name / "training_run.json").read_text())
        assert trials[steps].value == pytest.approx(record["best_metric"])
        assert record["steps"] == steps
        assert json.loads((runs / name / "config.json").read_text())["extra"]["split"]["val_fold"] == 1
    pruned = trials[6].user_attrs["run_name"]
    assert json.loads((folder / "pruned" / f"{pruned}.json").read_text())["step"] == 6
    assert not (runs / pruned / "training_run.json").exists()  # stopped: never a finished run, never evaluated
    assert not (project / "data/08_reporting" / pruned).exists()

    summary = pd.read_csv(folder / "campaign_summary.csv")
    assert sorted(summary["method"][summary["method"].str.match(r"^t\d{3}$")]) == sorted(
        f"t{trials[s].number:03d}" for s in (2, 3))
    table = pd.read_csv(folder / "optuna_trials.csv")
    assert sorted(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert (folder / "figures/optuna_history.png").is_file()
    assert "## Optuna study" in (folder / "campaign_report.md").read_text()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlruns = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")
    children = {r.info.run_name: r for r in mlruns if r.data.tags.get("isles_diffseg_campaign_role") == "run"}
    assert sorted(children) == sorted(t.user_attrs["run_name"] for t in study.trials)
    assert children[pruned].data.tags["isles_diffseg_optuna_state"] == "PRUNED"
    assert children[pruned].info.status == "KILLED"
