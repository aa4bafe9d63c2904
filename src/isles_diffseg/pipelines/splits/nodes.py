"""Splits node: patient-level, lesion-volume-stratified fold numbers (roles are chosen at run time)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from isles_diffseg.data.folds import assign_folds

logger = logging.getLogger(__name__)


def make_case_folds(manifest: pd.DataFrame, splits: dict[str, Any], data: dict[str, Any]) -> pd.DataFrame:
    """``case_id, fold, lesion_volume_ml, stratum`` for every ingested case.

    No train/val/test roles here: training and evaluation derive them from ``data.fold`` /
    ``data.val_fold`` when they run (:func:`isles_diffseg.data.folds.roles_for_run`), so choosing
    another fold never needs this node again and cross-validation reuses one table.
    """
    ok = manifest[manifest["status"] == "ok"]
    folds = assign_folds(
        list(ok["case_id"]),
        list(ok["lesion_volume_ml"].fillna(0.0)),
        n_folds=int(data["n_folds"]),
        seed=int(data["seed"]),
        n_strata=int(splits["n_strata"]),
    )
    logger.info("%d folds (seed %s), cases per fold: %s", data["n_folds"], data["seed"],
                folds["fold"].value_counts().sort_index().to_dict())
    return folds
