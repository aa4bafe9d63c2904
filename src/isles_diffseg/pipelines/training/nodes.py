"""Training node: resolve the named variants, train on the current fold, report the run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.training.launch import launch_training

logger = logging.getLogger(__name__)


def train_model(
    store: SliceStore, folds: pd.DataFrame, training: dict[str, Any], variants: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train one model (``training.model`` etc. name the variants); returns the run summary and history.

    Parameters, curves, validation grids and the best checkpoint go to the model's own MLflow run, a
    child of this `kedro run`'s run named after the training run (see :mod:`isles_diffseg.tracking`).
    """
    result = launch_training(store, folds, training, variants)
    logger.info("Training run %s: %d steps, best val_dice_3d %s at step %s -> %s", result.run_name, result.steps,
                result.best_metric, result.best_step, result.best_checkpoint)
    summary = result.summary()
    summary["run_dir"] = str(Path(summary["run_dir"]).resolve())
    return summary, pd.DataFrame(result.history)
