"""Preemption: a campaign run signalled by the scheduler saves its checkpoint, requeues through submitit's
checkpointing protocol, resumes, and ends exactly as the same run left alone (one MLflow run throughout).

The hand-over is made deterministic rather than raced against training: as soon as the run's first
checkpoint exists, the run's ``kedro run`` (its whole process group) is stopped with SIGSTOP, the job gets
the scheduler's SIGUSR2, and the run is continued only once the job's SIGINT is pending in it. So the
interruption lands during training however slow or loaded the machine is, and a run that ignores SIGINT
fails here (no SIGINT ever becomes pending) instead of quietly training to its end. The run is held while it
writes that checkpoint, which is where a KeyboardInterrupt used to be lost (pickling swallowed it), so the
trainer's stop at the next step boundary is what this test relies on.
"""

from __future__ import annotations

import os
import re
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

pytestmark = pytest.mark.slow

# The run is held still from its first checkpoint (step 2) until the interruption is pending, so few steps
# suffice; two validations (30, 60) make best.pt a choice the resumed run must make as the uninterrupted one.
STEPS = 60
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


def sigint_pending(pid: int) -> bool:
    """SIGINT waits, undelivered, in the (stopped) process: ShdPnd is the process-wide pending set."""
    status = Path(f"/proc/{pid}/status").read_text()
    pending = int(re.search(r"^ShdPnd:\s*([0-9a-f]+)$", status, flags=re.MULTILINE).group(1), 16)
    return bool(pending & (1 << (signal.SIGINT - 1)))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_preempted_run_requeues_and_resumes_to_the_uninterrupted_result(project_copy, tmp_path):
    project = process_tiny_release(project_copy)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    before = len(mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list"))  # data processing
    tracker = CampaignTracker(uri, "isles_diffseg", "rq")
    parent = tracker.parent("grid", {})

    def spec(name: str) -> RunSpec:
        return RunSpec(str(project), name, PARAMS, gpus=0, mlflow_run_id=tracker.child(parent, name, {}),
                       extra_env={"MLFLOW_TRACKING_URI": uri})

    executor = make_executor(Resources(executor="local", gpus=0, time="60"), tmp_path / "submitit", "rq")
    # Submitted as from a background shell (`campaign ... &` in a script, and CI): SIGINT ignored, which every
    # process below inherits unless the job hands its run the default back (CI failed twice without it).
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        job = executor.submit(FoldRun(spec("rq_interrupted")))
    finally:
        signal.signal(signal.SIGINT, ignored)
    run_dir = project / "data/06_models/rq_interrupted"
    latest = run_dir / "checkpoints/latest.pt"
    wait_for(latest.is_file, 600, "the first checkpoint")
    (task,) = children_of(int(job.job_id))  # submitit's controller -> the job's task -> its kedro run
    (kedro,) = children_of(task)
    os.killpg(kedro, signal.SIGSTOP)  # the kedro run leads its own process group (its DataLoader workers too)
    stopped_at = torch.load(latest, weights_only=False)["step"]
    assert stopped_at < STEPS and not (run_dir / "training_run.json").exists(), "held only after training ended"
    # what SLURM does before the time limit or on preemption: SIGUSR2 to the job's task
    os.kill(task, signal.SIGUSR2)
    wait_for(lambda: sigint_pending(kedro), 120, "the job's SIGINT to reach its kedro run (ignored: never pending)")
    os.killpg(kedro, signal.SIGCONT)
    result = job.result()

    first, second = result["attempts"]
    assert first["state"] == "new" and first["ended"] == "requeued"
    log = (job.stdout() or "") + (job.stderr() or "")
    assert "Requeued job" in log
    # the interrupted trainer saved latest.pt where it stopped, and the requeued attempt resumed from that step
    (saved_at,) = {int(step) for step in re.findall(r"Interrupted at step (\d+): saving", log)}
    assert stopped_at <= saved_at < STEPS
    assert second["state"] == "resumable" and second["resume_step"] == saved_at and second["ended"] == "finished"

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
    model_runs = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list",
                                    filter_string="tags.isles_diffseg_run_name = 'rq_interrupted'")
    assert len(model_runs) == 1 and model_runs[0].info.status == "FINISHED"
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(model_runs[0].info.run_id, "train_loss")]
    assert len(steps) == len(set(steps)) and max(steps) == STEPS  # the resumed attempt did not log a step again
    campaign_run = mlflow.get_run(model_runs[0].data.tags["mlflow.parentRunId"])
    assert campaign_run.info.run_name == "rq_interrupted" and campaign_run.info.status == "FINISHED"
    # and the second attempt opened nothing: each campaign run holds its model's run only, as the reference does
    everything = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")
    held = {run.info.run_name: sorted(r.info.run_name for r in everything
                                      if r.data.tags.get("mlflow.parentRunId") == run.info.run_id)
            for run in everything if run.data.tags.get("mlflow.parentRunId") == parent}
    assert held == {"rq_interrupted": ["rq_interrupted"], "rq_reference": ["rq_reference"]}
    assert len(everything) == before + 5  # the campaign, its two runs, their two model runs
