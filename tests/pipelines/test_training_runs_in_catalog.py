"""Trained runs are catalog data: one record of a finished run, however it was trained, and one "latest"."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import run_kedro
from tiny_project import DATA, process_tiny_release

from isles_diffseg.datasets import training_run_dataset
from isles_diffseg.datasets.training_run_dataset import TrainingRunDataset

pytestmark = pytest.mark.slow

TINY = {"recipe": "train_test_tiny", "max_steps": 2}
EVALUATION = {"members": 1, "threshold": {"mode": "fixed"}}


@pytest.fixture
def processed(project_copy):
    return process_tiny_release(project_copy)


def catalog_load(project, name: str, runtime_params: dict | None = None):
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime_params or {}) as session:
        value = session.load_context().catalog.load(name)
    while mlflow.active_run():
        mlflow.end_run()
    return value


def test_a_torchrun_run_is_evaluated_by_name_and_unknown_names_list_the_runs(processed):
    # Two gloo ranks on the CPU, started the way the README tells a user to start them.
    params = "data.n_folds=3,data.seed=1,data.fold=1,training.recipe=train_test_tiny,training.max_steps=2," \
             "training.run_name=via_torchrun"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "isles_diffseg.train", "--params", params],
                   cwd=processed, env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}, check=True, timeout=300)
    record = json.loads((processed / "data/06_models/via_torchrun/training_run.json").read_text())
    assert record["run_name"] == "via_torchrun" and record["steps"] == 2 and not record["interrupted"]

    run_kedro(processed, "evaluation", {"data": {**DATA, "fold": 1}, "evaluation": {**EVALUATION, "run": "via_torchrun"}})
    summary = json.loads((processed / "data/08_reporting/via_torchrun/summary.json").read_text())
    assert summary["run_name"] == "via_torchrun" and summary["details"]["fold"] == 1

    # A run with checkpoints but no finished record (interrupted, still running) is named as such.
    (processed / "data/06_models/half_done/checkpoints").mkdir(parents=True)
    (processed / "data/06_models/half_done/checkpoints/latest.pt").write_bytes(b"")
    with pytest.raises(Exception) as error:
        run_kedro(processed, "evaluation", {"data": {**DATA, "fold": 1}, "evaluation": {**EVALUATION, "run": "nope"}})
    message = str(error.value)
    assert "evaluation.run='nope' is not a finished training run" in message
    assert "finished runs: ['via_torchrun']" in message and "best.pt" not in message
    assert "resume with training.resume=<name>): ['half_done']" in message

    with pytest.raises(Exception, match=r"evaluation.run='../via_torchrun' is not a valid run name"):
        run_kedro(processed, "evaluation",
                  {"data": {**DATA, "fold": 1}, "evaluation": {**EVALUATION, "run": "../via_torchrun"}})


def test_latest_run_is_the_last_finished_one_and_evaluation_builds_the_model_once(processed, monkeypatch):
    run_kedro(processed, "training", {"data": {**DATA, "fold": 0}, "training": {**TINY, "run_name": "first"}})
    run_kedro(processed, "training", {"data": {**DATA, "fold": 2}, "training": {**TINY, "run_name": "second"}})

    latest = catalog_load(processed, "training_run")
    assert latest.name == "second" and latest.split["test_fold"] == 2 and latest.record["steps"] == 2
    assert list(latest.history["step"]) == [2]  # validation every 3 steps, and at the last step
    named = catalog_load(processed, "training_run", {"evaluation": {"run": "first"}})
    assert named.name == "first" and named.split["test_fold"] == 0

    built = []
    load = training_run_dataset.load_trained_model
    monkeypatch.setattr(training_run_dataset, "load_trained_model",
                        lambda folder, device: built.append(folder.name) or load(folder, device))
    run_kedro(processed, "evaluation", {"data": {**DATA, "fold": 2}, "evaluation": {**EVALUATION, "threshold": {
        "mode": "sweep", "candidates": [0.3, 0.5]}}})
    assert built == ["second"]  # threshold sweep and predictions share one model
    metrics = pd.read_csv(processed / "data/08_reporting/second/case_metrics.csv")
    assert set(metrics["fold"]) == {2}


def test_an_interrupted_result_is_refused_as_a_finished_run(tmp_path):
    from isles_diffseg.training.trainer import TrainingResult

    (tmp_path / "r/checkpoints").mkdir(parents=True)
    torch.save({}, tmp_path / "r/checkpoints/best.pt")
    result = TrainingResult("r", str(tmp_path / "r"), 5, None, None, None, 0, interrupted=True)
    with pytest.raises(Exception, match="interrupted.*resume with training.resume=r"):
        TrainingRunDataset(str(tmp_path)).save(result)
    assert training_run_dataset.latest_run(tmp_path) is None
