"""Preemption: a campaign run signalled by the scheduler saves its checkpoint, requeues through submitit's
checkpointing protocol, resumes, and ends exactly as the same run left alone (one MLflow run throughout)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from tiny_project import process_tiny_release

from isles_diffseg.campaign.executors import Resources, make_executor
from isles_diffseg.campaign.runs import FoldRun, RunSpec
from isles_diffseg.campaign.tracking import CampaignTracker

pytestmark = [
    pytest.mark.slow,
    # Passes when run alone (2 min), but in two full `bash .ci/run` runs on a fresh clone the first attempt's
    # `kedro run` finished training and evaluation despite the SIGUSR2 -> SIGINT hand-over (its second attempt
    # found the run "evaluated"). Until that is understood the requeue is not verified; issue 11 stays open.
    pytest.mark.skip(reason="requeue hand-over not reliable in a full-suite run; see the comment and issue 11"),
]

# Long enough that the signal, sent as soon as the first checkpoint exists, lands during training also on a
# quiet machine (30 steps finished before it in CI, and the second attempt only evaluated)
STEPS = 300
PARAMS = {"training.recipe": "train_test_tiny", "training.max_steps": STEPS, "training.checkpoint_interval": 2,
          "training.val_interval": STEPS // 2, "evaluation.members": 1, "evaluation.threshold.mode": "fixed",
          "data.n_folds": 3, "data.seed": 1, "data.fold": 0, "data.val_fold": None}


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_preempted_run_requeues_and_resumes_to_the_uninterrupted_result(project_copy, tmp_path):
    project = process_tiny_release(project_copy)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    tracker = CampaignTracker(uri, "isles_diffseg", "rq")
    parent = tracker.parent("grid", {})

    def spec(name: str) -> RunSpec:
        return RunSpec(str(project), name, PARAMS, gpus=0, mlflow_run_id=tracker.child(parent, name, {}),
                       extra_env={"MLFLOW_TRACKING_URI": uri})

    executor = make_executor(Resources(executor="local", gpus=0, time="30"), tmp_path / "submitit", "rq")
    job = executor.submit(FoldRun(spec("rq_interrupted")))
    latest = project / "data/06_models/rq_interrupted/checkpoints/latest.pt"
    wait_for(latest.is_file, 180, "the first checkpoint")
    # what SLURM does before the time limit or on preemption: SIGUSR2 to the job's task
    (task,) = children_of(int(job.job_id))
    os.kill(task, signal.SIGUSR2)
    result = job.result()

    first, second = result["attempts"]
    assert first["state"] == "new" and first["ended"] == "requeued"
    assert second["state"] == "resumable" and 2 <= second["resume_step"] < STEPS and second["ended"] == "finished"
    assert "Requeued job" in (job.stdout() or "") + (job.stderr() or "")

    reference = FoldRun(spec("rq_reference")).execute()
    assert [a["state"] for a in reference["attempts"]] == ["new"]

    runs = project / "data/06_models"
    assert torch.load(runs / "rq_interrupted/checkpoints/latest.pt", weights_only=False)["step"] == STEPS
    for file in ("latest.pt", "best.pt"):
        resumed = torch.load(runs / "rq_interrupted/checkpoints" / file, weights_only=False)
        plain = torch.load(runs / "rq_reference/checkpoints" / file, weights_only=False)
        assert resumed["step"] == plain["step"]
        for key, tensor in plain["model"].items():
            assert torch.equal(resumed["model"][key], tensor), f"{file}: {key} differs"
    resumed, plain = (pd.read_csv(runs / name / "history.csv") for name in ("rq_interrupted", "rq_reference"))
    pd.testing.assert_frame_equal(resumed, plain)
    metrics = {name: pd.read_csv(project / "data/08_reporting" / name / "case_metrics.csv")
               for name in ("rq_interrupted", "rq_reference")}
    model = {name: table[table["method"] == name].set_index("case_id")["dice"] for name, table in metrics.items()}
    pd.testing.assert_series_equal(model["rq_interrupted"], model["rq_reference"], check_names=False)

    # One MLflow run of the interrupted run's model, finished, its curve logged once per step across attempts
    mlflow.set_tracking_uri(uri)
    model_runs = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list",
                                    filter_string="tags.isles_diffseg_run_name = 'rq_interrupted'")
    assert len(model_runs) == 1 and model_runs[0].info.status == "FINISHED"
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(model_runs[0].info.run_id, "train_loss")]
    assert len(steps) == len(set(steps)) and max(steps) == STEPS  # the resumed attempt did not log a step again
    campaign_run = mlflow.get_run(model_runs[0].data.tags["mlflow.parentRunId"])
    assert campaign_run.info.run_name == "rq_interrupted" and campaign_run.info.status == "FINISHED"
