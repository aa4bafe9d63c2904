"""Patient-level folds, stratified by lesion volume, deterministic for a seed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def lesion_volume_strata(volumes_ml: np.ndarray, n_strata: int) -> np.ndarray:
    """Stratum per case: 0 for lesion-free cases, then 1..n_strata by lesion-volume quantile."""
    volumes_ml = np.asarray(volumes_ml, dtype=float)
    strata = np.zeros(len(volumes_ml), dtype=int)
    positive = volumes_ml > 0
    if positive.any() and n_strata > 0:
        ranks = volumes_ml[positive].argsort().argsort()
        strata[positive] = 1 + (ranks * n_strata) // positive.sum()
    return strata


def assign_folds(case_ids: list[str], volumes_ml: list[float], *, n_folds: int = 5, seed: int = 0, n_strata: int = 3) -> pd.DataFrame:
    """One row per case: ``case_id, fold, lesion_volume_ml, stratum``.

    Inside each stratum, cases are shuffled with ``seed`` and dealt round-robin; the dealing
    continues where the previous stratum stopped, so fold sizes differ by at most one.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if len(case_ids) != len(set(case_ids)):
        raise ValueError("case_ids must be unique: a patient may appear in one fold only")
    if len(case_ids) < n_folds:
        raise ValueError(f"{len(case_ids)} cases cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    strata = lesion_volume_strata(np.asarray(volumes_ml), n_strata)
    folds = np.empty(len(case_ids), dtype=int)
    order = np.argsort(case_ids, kind="stable")  # independent of the input order
    dealt = 0
    for stratum in np.unique(strata):
        members = order[strata[order] == stratum]
        members = members[rng.permutation(len(members))]
        folds[members] = (dealt + np.arange(len(members))) % n_folds
        dealt += len(members)
    return pd.DataFrame(
        {"case_id": case_ids, "fold": folds, "lesion_volume_ml": np.asarray(volumes_ml, float), "stratum": strata}
    ).sort_values("case_id", ignore_index=True)


def assign_roles(folds: pd.DataFrame, *, test_fold: int, val_fold: int | None = None) -> pd.DataFrame:
    """Add ``role`` (train / val / test): ``test_fold`` is held out, ``val_fold`` (default the next
    fold) selects checkpoints and thresholds, the remaining folds train."""
    n_folds = int(folds["fold"].max()) + 1
    if not 0 <= test_fold < n_folds:
        raise ValueError(f"data.fold={test_fold} is outside the {n_folds} folds (0..{n_folds - 1})")
    val_fold = (test_fold + 1) % n_folds if val_fold is None else val_fold
    if val_fold == test_fold or not 0 <= val_fold < n_folds:
        raise ValueError(f"validation fold {val_fold} must be a fold other than the test fold {test_fold}")
    out = folds.copy()
    out["role"] = np.where(out["fold"] == test_fold, "test", np.where(out["fold"] == val_fold, "val", "train"))
    return out


def roles_for_run(folds: pd.DataFrame, data: Mapping[str, Any]) -> pd.DataFrame:
    """Roles of a training or evaluation run, chosen when it runs: ``data.fold`` is held out (test),
    ``data.val_fold`` (null: the next fold; ``none``: no validation fold) validates, the rest train.

    ``folds`` is ``case_folds`` (one fold number per case, computed once by the `splits` pipeline); it
    must have been made with ``data.n_folds`` folds, or fold numbers would mean something else.
    """
    missing = {"case_id", "fold"} - set(folds.columns)
    if missing:
        raise ValueError(f"case_folds lacks the columns {sorted(missing)}; re-run `kedro run --pipelines splits`")
    n_folds = int(data["n_folds"])
    found = int(folds["fold"].max()) + 1
    if found != n_folds:
        raise ValueError(f"case_folds holds {found} folds but data.n_folds={n_folds}; re-run "
                         f"`kedro run --pipelines splits --params data.n_folds={n_folds}` or set data.n_folds={found}")
    val_fold = data.get("val_fold")
    if isinstance(val_fold, str) and val_fold.lower() == "none":  # no validation fold: every other fold trains (e.g. 2-fold CV)
        test_fold = int(data["fold"])
        if not 0 <= test_fold < n_folds:
            raise ValueError(f"data.fold={test_fold} is outside the {n_folds} folds (0..{n_folds - 1})")
        out = folds.drop(columns="role", errors="ignore").copy()
        out["role"] = np.where(out["fold"] == test_fold, "test", "train")
        return out
    return assign_roles(folds.drop(columns="role", errors="ignore"), test_fold=int(data["fold"]),
                        val_fold=None if val_fold is None else int(val_fold))


def split_record(roles: pd.DataFrame) -> dict[str, Any]:
    """What a run records about its cases (run config, MLflow, report): folds and the cases of each role."""
    fold_of = {role: sorted(set(roles.loc[roles["role"] == role, "fold"])) for role in ("test", "val")}
    cases = {role: sorted(roles.loc[roles["role"] == role, "case_id"]) for role in ("train", "val", "test")}
    return {"n_folds": int(roles["fold"].max()) + 1, "test_fold": int(fold_of["test"][0]),
            "val_fold": int(fold_of["val"][0]) if fold_of["val"] else None, "n_train_cases": len(cases["train"]),
            "val_cases": cases["val"], "test_cases": cases["test"]}
