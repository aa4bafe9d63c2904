"""Sends training metrics, validation grids and the best checkpoint to the model's MLflow run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from isles_diffseg.tracking import ModelRunLogger
from isles_diffseg.training.figures import validation_grid
from isles_diffseg.training.validation import ValidationResult


class MlflowSink:
    """Logs into one MLflow run (see :mod:`isles_diffseg.tracking`)."""

    def __init__(self, run_id: str, log_checkpoints: bool = True):
        self.log = ModelRunLogger(run_id)
        self.log_checkpoints = log_checkpoints

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.log.metrics(metrics, step)

    def log_validation(self, result: ValidationResult, step: int, modalities: list[str]) -> None:
        if result.examples:
            fig = validation_grid(result.examples, modalities)
            self.log.figure(fig, f"validation/grid_step{step:08d}.png")
            plt.close(fig)

    def log_checkpoint(self, path: Path) -> None:
        if self.log_checkpoints:
            self.log.artifact(path, "checkpoints")
