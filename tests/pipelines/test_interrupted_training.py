"""Ctrl-C during `kedro run --pipelines training,evaluation` stops the run: nothing is evaluated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest
from tiny_project import process_tiny_release

pytestmark = pytest.mark.slow


@pytest.fixture
def processed(project_copy):
    return process_tiny_release(project_copy)


def test_ctrl_c_saves_the_checkpoint_and_fails_the_kedro_run_before_evaluation(processed, tmp_path):
    kedro = Path(sys.executable).with_name("kedro")
    params = ("data.n_folds=3,data.seed=1,training.recipe=train_test_tiny,training.max_steps=100000,training.run_name=stopped,"
              "evaluation.members=1")
    process = subprocess.Popen([str(kedro), "run", "--pipelines", "training,evaluation", "--params", params],
                               cwd=processed, env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(300, process.kill)  # a hang must fail the test, not the suite
    watchdog.start()
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if "Step 3/100000" in line:  # inside the training loop: what Ctrl-C in the terminal interrupts
                process.send_signal(signal.SIGINT)
        returncode = process.wait()
    finally:
        watchdog.cancel()
    text = "".join(output)

    assert returncode != 0, text
    assert "resume with training.resume=stopped" in text
    assert (processed / "data/06_models/stopped/checkpoints/latest.pt").is_file()
    # evaluation never started, and the run is not recorded as the latest training run
    assert "select_threshold" not in text.split("Interrupted at step")[-1]
    assert not (processed / "data/08_reporting/stopped").exists()
    assert not (processed / "data/07_model_output/stopped").exists()
    from isles_diffseg.datasets.training_run_dataset import latest_run

    assert not (processed / "data/06_models/stopped/training_run.json").exists()
    assert latest_run(processed / "data/06_models") is None

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["isles_diffseg"], output_format="list")
    child = next(r for r in runs if r.data.tags.get("isles_diffseg_run_name") == "stopped")
    assert child.info.status == "KILLED"


def test_ctrl_c_in_the_torchrun_entry_point_exits_130_without_a_finished_record(processed, monkeypatch, caplog):
    from isles_diffseg import train
    from isles_diffseg.datasets.training_run_dataset import latest_run
    from isles_diffseg.training.trainer import Trainer

    real_step = Trainer.train_step

    def step_then_ctrl_c(self):
        if self.step >= 2:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    code = train.main(["--params", "data.n_folds=3,data.seed=1,training.recipe=train_test_tiny,"
                                   "training.max_steps=50,training.run_name=entry_stopped"])
    assert code == 130
    assert "resume with training.resume=entry_stopped" in caplog.text
    assert (processed / "data/06_models/entry_stopped/checkpoints/latest.pt").is_file()
    assert not (processed / "data/06_models/entry_stopped/training_run.json").exists()
    assert latest_run(processed / "data/06_models") is None
