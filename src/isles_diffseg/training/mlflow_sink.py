"""Sends training metrics, validation grids and the best checkpoint to the active MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow

from isles_diffseg.training.figures import validation_grid
from isles_diffseg.training.validation import ValidationResult

logger = logging.getLogger(__name__)


class MlflowSink:
    """Logs into ``mlflow.active_run()`` (kedro-mlflow opens it); does nothing when there is none."""

    def __init__(self, log_checkpoints: bool = True):
        self.log_checkpoints = log_checkpoints

    @staticmethod
    def _active() -> bool:
        return mlflow.active_run() is not None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._active():
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)

    def log_validation(self, result: ValidationResult, step: int, modalities: list[str]) -> None:
        if not self._active() or not result.examples:
            return
        fig = validation_grid(result.examples, modalities)
        mlflow.log_figure(fig, f"validation/grid_step{step:08d}.png")
        plt.close(fig)

    def log_checkpoint(self, path: Path) -> None:
        if self._active() and self.log_checkpoints:
            mlflow.log_artifact(str(path), artifact_path="checkpoints")
