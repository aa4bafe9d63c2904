"""Sends training metrics, validation figures and the best checkpoint to the model's MLflow run."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from isles_diffseg.tracking import ModelRunLogger
from isles_diffseg.training.figures import (
    denoising_chain_grid,
    probability_histogram,
    validation_grid,
    volume_scatter,
)
from isles_diffseg.training.validation import PROBABILITY_BIN_EDGES, ValidationResult, summed_counts


class MlflowSink:
    """Logs into one MLflow run (see :mod:`isles_diffseg.tracking`)."""

    def __init__(self, run_id: str, log_checkpoints: bool = True):
        self.log = ModelRunLogger(run_id)
        self.log_checkpoints = log_checkpoints

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.log.metrics(metrics, step)

    def log_validation(self, result: ValidationResult, step: int, modalities: list[str]) -> None:
        """Figures under ``validation/``, one file per kind and step.

        ``volume_stepN`` and ``probability_histogram_stepN`` cover every validation case; ``grid_stepN`` and,
        for diffusion models, ``denoising_chain_stepN`` show the example slices.
        """
        suffix = f"step{step:08d}.png"
        per_case = result.per_case
        if not per_case.empty:
            self._figure(volume_scatter(per_case["gt_pixels"].to_numpy(), per_case["pred_pixels"].to_numpy(),
                                        "pixels, slice-store grid"), f"validation/volume_{suffix}")
            lesion, background = summed_counts(per_case)
            self._figure(probability_histogram(lesion, background, PROBABILITY_BIN_EDGES),
                         f"validation/probability_histogram_{suffix}")
        if result.examples:
            self._figure(validation_grid(result.examples, modalities), f"validation/grid_{suffix}")
            if all("chain_x0" in example for example in result.examples):
                self._figure(denoising_chain_grid(result.examples, modalities), f"validation/denoising_chain_{suffix}")

    def log_checkpoint(self, path: Path) -> None:
        if self.log_checkpoints:
            self.log.artifact(path, "checkpoints")

    def _figure(self, figure: Figure, path: str) -> None:
        self.log.figure(figure, path)  # built outside pyplot (training/figures.py): nothing to close
