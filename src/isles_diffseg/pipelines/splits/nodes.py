"""Splits node: patient-level, lesion-volume-stratified folds with train/val/test roles."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from isles_diffseg.data.folds import assign_folds, assign_roles

logger = logging.getLogger(__name__)


def make_case_folds(manifest: pd.DataFrame, splits: dict[str, Any], data: dict[str, Any]) -> pd.DataFrame:
    ok = manifest[manifest["status"] == "ok"]
    folds = assign_folds(
        list(ok["case_id"]),
        list(ok["lesion_volume_ml"].fillna(0.0)),
        n_folds=int(data["n_folds"]),
        seed=int(data["seed"]),
        n_strata=int(splits["n_strata"]),
    )
    folds = assign_roles(folds, test_fold=int(data["fold"]), val_fold=data.get("val_fold"))
    logger.info("Folds: %s; roles for data.fold=%s: %s", folds["fold"].value_counts().sort_index().to_dict(),
                data["fold"], folds["role"].value_counts().to_dict())
    return folds
