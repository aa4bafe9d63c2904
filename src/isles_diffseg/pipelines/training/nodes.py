"""Training node: resolve the named variants, train on the current fold, report the run."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from isles_diffseg.data.folds import roles_for_run, split_record
from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.training.launch import TrainingInterrupted, launch_training
from isles_diffseg.training.trainer import TrainingResult

logger = logging.getLogger(__name__)


def train_model(
    store: SliceStore, folds: pd.DataFrame, training: dict[str, Any], variants: dict[str, Any], data: dict[str, Any]
) -> tuple[TrainingResult, pd.DataFrame]:
    """Train one model (``training.model`` etc. name the variants) on the folds ``data.fold`` /
    ``data.val_fold`` leave for training; returns the finished run (the catalog's ``training_run`` records
    it) and its history.

    The split (folds, validation and test cases) is recorded in the run config (``extra.split``) and so
    in the model's own MLflow run, a child of this `kedro run`'s run named after the training run (see
    :mod:`isles_diffseg.tracking`), with its parameters, curves, validation grids and best checkpoint.
    """
    roles = roles_for_run(folds, data)
    split = split_record(roles)
    logger.info("Test fold %d, validation fold %s of %d: %d training, %d validation, %d test cases",
                split["test_fold"], split["val_fold"], split["n_folds"], split["n_train_cases"],
                len(split["val_cases"]), len(split["test_cases"]))
    result = launch_training(store, roles, training, variants, split)
    if result.interrupted:
        # Returning would save the run as this pipeline's output: evaluation would start on a partly trained
        # model (or none) and the run would become "the latest". Failing stops `kedro run` with the fix.
        raise TrainingInterrupted(result)
    logger.info("Training run %s: %d steps, best %s %s at step %s -> %s", result.run_name, result.steps,
                result.selection_metric, result.best_metric, result.best_step, result.best_checkpoint)
    return result, pd.DataFrame(result.history)
