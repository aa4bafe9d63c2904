"""Where a model's MLflow records go: one child run per training run, under the `kedro run`'s run.

kedro-mlflow opens one MLflow run per `kedro run`. The demo chain trains and evaluates two models
in that one `kedro run`, so each model gets its own child run (tag ``isles_diffseg_run_name``), which
holds its parameters, training curves, checkpoint, and later its evaluation. A resumed or
re-evaluated run finds its child run again by that tag.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

RUN_TAG = "isles_diffseg_run_name"


def model_run_id(run_name: str, *, create: bool = True) -> str | None:
    """The child run of ``run_name`` (found by tag, or created under the active run); None if tracking is off."""
    active = mlflow.active_run()
    if active is None:
        return None
    client = MlflowClient()
    found = client.search_runs([active.info.experiment_id], filter_string=f"tags.{RUN_TAG} = '{run_name}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    if not create:
        return None
    run = client.create_run(active.info.experiment_id, run_name=run_name,
                            tags={"mlflow.parentRunId": active.info.run_id, RUN_TAG: run_name})
    return run.info.run_id


class ModelRunLogger:
    """Thin wrapper over :class:`MlflowClient` bound to one run id (no global active-run state)."""

    def __init__(self, run_id: str):
        self.run_id, self.client = run_id, MlflowClient()

    def params(self, params: dict[str, Any]) -> None:
        logged = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in logged]
        for start in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[start : start + 100])

    def metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for start in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 500])

    def figure(self, figure: Figure, path: str) -> None:
        self.client.log_figure(self.run_id, figure, path)

    def text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def artifact(self, path: Path, folder: str) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
