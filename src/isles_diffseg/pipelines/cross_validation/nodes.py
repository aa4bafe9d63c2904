"""Cross-validation: one independent training + evaluation run per fold, then one report over the folds.

Each fold is its own ``kedro run --pipelines training,evaluation`` (a child process started with this run's
environment and ``--params``, plus ``data.fold=k``), exactly what a cluster job array would run, so folds
can later run in parallel elsewhere and the report only reads what they left in the catalog. In MLflow,
the cross-validation `kedro run` is the parent and every fold run its child.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from isles_diffseg.config.params_text import params_text
from isles_diffseg.data.folds import roles_for_run
from isles_diffseg.datasets.run_scoped_dataset import RunArtifact
from isles_diffseg.evaluation.report import TABLE_METRICS, to_markdown
from isles_diffseg.tracking import ModelRunLogger, flatten
from isles_diffseg.training.run_config import check_run_name

logger = logging.getLogger(__name__)

MODEL = "model"  # the per-fold run names differ; in the pooled tables the trained model is this method


def cv_name(cv: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    return check_run_name(str(cv.get("name") or training["model"]), "cv.name")


def fold_run_name(name: str, fold: int) -> str:
    return f"cv_{name}_fold{fold}"


def selected_folds(setting: Any, n_folds: int) -> list[int]:
    """``cv.folds``: ``all``, ``none``, one fold number, or numbers joined by '+' (``--params`` has no lists)."""
    text = str(setting).strip().lower()
    if text == "all":
        return list(range(n_folds))
    if text in ("none", ""):
        return []
    try:
        folds = sorted({int(part) for part in text.split("+")})
    except ValueError:
        raise ValueError(f"cv.folds={setting!r}: use all, none, or fold numbers joined by '+' (e.g. 0+2)") from None
    outside = [k for k in folds if not 0 <= k < n_folds]
    if outside:
        raise ValueError(f"cv.folds={setting!r}: folds {outside} are outside 0..{n_folds - 1} (data.n_folds={n_folds})")
    return folds


def fold_command(cv: Mapping[str, Any], fold: int, run_name: str) -> list[str]:
    """``kedro run --pipelines training,evaluation`` for one fold, with this run's env and ``--params``."""
    inherited = {k: v for k, v in flatten(dict(cv.get("runtime_params") or {})).items() if not k.startswith("cv.")}
    overrides = {"data.fold": fold, "data.val_fold": cv.get("val_fold"), "training.run_name": run_name,
                 "training.resume": None, "evaluation.run": run_name}
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", "training,evaluation",
               "--params", params_text({**inherited, **overrides})]
    if cv.get("env"):
        command += ["--env", str(cv["env"])]
    return command


def _fold_mlflow_run(name: str, fold: int, run_name: str) -> str | None:
    """A child of this `kedro run`'s MLflow run, which the fold's own `kedro run` logs into."""
    import mlflow
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    if active is None:
        return None
    run = MlflowClient().create_run(active.info.experiment_id, run_name=run_name, tags={
        "mlflow.parentRunId": active.info.run_id, "isles_diffseg_cv": name, "isles_diffseg_cv_fold": str(fold)})
    return run.info.run_id


def train_and_evaluate_folds(folds: pd.DataFrame, existing_runs: list[str], data: dict[str, Any],
                             training: dict[str, Any], cv: dict[str, Any]) -> dict[str, Any]:
    """Run training + evaluation for each selected fold, one fold after the other; returns what ran.

    A fold whose run folder already exists is refused rather than trained over: its old finished-run
    record would outlive a new training stopped half way.
    """
    n_folds = int(data["n_folds"])
    roles_for_run(folds, {**data, "fold": 0, "val_fold": None})  # case_folds must hold data.n_folds folds
    name = cv_name(cv, training)
    todo = selected_folds(cv.get("folds", "all"), n_folds)
    clashes = [fold_run_name(name, k) for k in todo if fold_run_name(name, k) in existing_runs]
    if clashes:
        raise ValueError(f"runs {clashes} already exist under training.output_dir: choose another cv.name, delete "
                         f"them, or leave them out of cv.folds (cv.folds=none only rebuilds the report)")
    launched = []
    for fold in todo:
        run_name = fold_run_name(name, fold)
        command = fold_command(cv, fold, run_name)
        env = dict(os.environ)
        child = _fold_mlflow_run(name, fold, run_name)
        if child is not None:
            import mlflow

            env.update(MLFLOW_RUN_ID=child, MLFLOW_TRACKING_URI=mlflow.get_tracking_uri())
        logger.info("Cross-validation fold %d/%d: %s", fold, n_folds - 1, " ".join(command))
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cv["project_path"], env=env)
        try:
            returncode = process.wait()
        except KeyboardInterrupt:  # the fold's kedro run got Ctrl-C too: let it save its checkpoint and stop
            returncode = process.wait()
            raise
        finally:
            if child is not None:
                from mlflow.tracking import MlflowClient

                client = MlflowClient()
                client.update_run(child, name=run_name)  # the fold's kedro run renames it after its pipelines
                if returncode != 0:
                    client.set_terminated(child, "FAILED")
        if returncode != 0:
            raise RuntimeError(f"cross-validation fold {fold} ({run_name}) failed with exit code {returncode}; "
                               f"the folds before it are kept. Command: {' '.join(command)}")
        launched.append({"fold": fold, "run_name": run_name, "seconds": round(time.perf_counter() - started, 1),
                         "mlflow_run_id": child})
    return {"name": name, "n_folds": n_folds, "launched": launched}


def _fold_tables(name: str, case_metrics: Mapping[str, Callable[[], pd.DataFrame]]) -> pd.DataFrame:
    pattern = re.compile(rf"^cv_{re.escape(name)}_fold(\d+)$")
    tables = []
    for partition, load in sorted(case_metrics.items()):
        match = pattern.match(partition.strip("/"))
        if not match:
            continue
        table = load().copy()
        table["fold"] = int(match.group(1))
        table["run_name"] = partition.strip("/")
        table["method"] = table["method"].where(table["method"] != table["run_name"], MODEL)
        tables.append(table)
    if not tables:
        raise ValueError(f"no evaluated fold of cross-validation {name!r} (data/08_reporting/cv_{name}_fold<k>/): "
                         "run some folds first (cv.folds)")
    return pd.concat(tables, ignore_index=True)


def compared_tables(names: Any, case_metrics: Mapping[str, Callable[[], pd.DataFrame]]) -> pd.DataFrame:
    """The model rows of other cross-validations (``cv.compare``: names joined by '+'), each method named by its
    cross-validation: e.g. nnU-Net predictions scored fold by fold as ``cv_nnunet2d_fold<k>`` with
    ``evaluation.predictions`` appear as ``nnunet2d`` beside ``model``. Their threshold-rule rows are dropped:
    the rules are already in the table, scored on the same cases when the folds are the same."""
    tables = []
    for other in [n for n in str(names or "").split("+") if n]:
        check_run_name(f"cv_{other}", "cv.compare")
        try:
            table = _fold_tables(other, case_metrics)
        except ValueError as exc:
            raise ValueError(f"cv.compare names {other!r}, which has no evaluated fold: {exc}") from exc
        table = table[table["method"] == MODEL].copy()
        table["method"] = other
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def fold_metrics(pooled: pd.DataFrame) -> pd.DataFrame:
    """One row per (fold, method): the mean of every metric over the fold's cases (NaN HD95 excluded)."""
    columns = [c for c, _, _ in TABLE_METRICS]
    table = pooled.groupby(["fold", "method"], sort=True)[columns].mean()
    table["n_cases"] = pooled.groupby(["fold", "method"], sort=True).size()
    return table.reset_index()


def across_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """One row per method: mean and sample SD over the fold means of every metric."""
    rows = []
    for method, rows_of_method in per_fold.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method, "n_folds": len(rows_of_method),
                               "n_cases": int(rows_of_method["n_cases"].sum())}
        for column, _, _ in TABLE_METRICS:
            values = rows_of_method[column].dropna().to_numpy(float)
            row[f"{column}_mean"] = float(values.mean()) if values.size else float("nan")
            row[f"{column}_sd"] = float(values.std(ddof=1)) if values.size >= 2 else float("nan")
        rows.append(row)
    order = {MODEL: 0}
    return pd.DataFrame(rows).sort_values("method", key=lambda s: s.map(lambda m: order.get(m, 1)), kind="stable",
                                          ignore_index=True)


def mean_sd_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for record in summary.to_dict("records"):
        row = {"method": record["method"], "folds": record["n_folds"], "cases": record["n_cases"]}
        for column, label, _ in TABLE_METRICS:
            mean, sd = record[f"{column}_mean"], record[f"{column}_sd"]
            row[label] = "n/a" if np.isnan(mean) else f"{mean:.3f} ± {sd:.3f}" if not np.isnan(sd) else f"{mean:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def dice_by_fold_figure(pooled: pd.DataFrame) -> Figure:
    methods = list(dict.fromkeys([MODEL, *pooled["method"]]))
    folds = sorted(pooled["fold"].unique())
    fig = Figure(figsize=(max(5.0, 1.4 * len(folds) * len(methods) / 2), 3.8))
    ax = fig.subplots()
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        data = [pooled.loc[(pooled["fold"] == k) & (pooled["method"] == method), "dice"].to_numpy() for k in folds]
        positions = [k + (i - (len(methods) - 1) / 2) * width for k in range(len(folds))]
        boxes = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, manage_ticks=False)
        for patch in boxes["boxes"]:
            patch.set_facecolor(f"C{i}")
        ax.plot([], [], color=f"C{i}", lw=6, label=method)
    ax.set_xticks(range(len(folds)), [f"fold {k}" for k in folds])
    ax.set_ylabel("3D Dice per case")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def volume_figure(pooled: pd.DataFrame) -> Figure:
    model = pooled[pooled["method"] == MODEL]
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for fold, rows in model.groupby("fold"):
        ax.scatter(rows["gt_volume_ml"], rows["pred_volume_ml"], s=14, label=f"fold {fold}")
    top = float(max(model["gt_volume_ml"].max(), model["pred_volume_ml"].max(), 1.0))
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlabel("true lesion volume (mL)")
    ax.set_ylabel("predicted lesion volume (mL)")
    ax.set_title("model, all folds", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def build_cv_report(launch: dict[str, Any], case_metrics: Mapping[str, Callable[[], pd.DataFrame]],
                    data: dict[str, Any], cv: dict[str, Any] | None = None) -> tuple:
    """Per-fold and mean ± SD metrics of the model and the threshold rules (same cases), the pooled per-case
    table and figures, from every fold of ``cv_<name>`` evaluated so far, with the cross-validations that
    ``cv.compare`` names beside them; logged to this run in MLflow."""
    name, n_folds = launch["name"], int(data["n_folds"])
    pooled = _fold_tables(name, case_metrics)
    compared = compared_tables((cv or {}).get("compare"), case_metrics)
    if len(compared):
        pooled = pd.concat([pooled, compared[compared["fold"].isin(pooled["fold"].unique())]], ignore_index=True)
    per_fold = fold_metrics(pooled)
    summary = across_folds(per_fold)
    present = sorted(int(k) for k in pooled["fold"].unique())
    missing = [k for k in range(n_folds) if k not in present]
    figures = {"dice_by_fold.png": dice_by_fold_figure(pooled), "volumes_all_folds.png": volume_figure(pooled)}
    fold_dice = per_fold.pivot(index="method", columns="fold", values="dice").reset_index()
    fold_dice.columns = ["method", *[f"fold {k}" for k in fold_dice.columns[1:]]]
    report = "\n".join([
        f"# Cross-validation `{name}`", "",
        f"Folds evaluated: {', '.join(map(str, present))} of {n_folds}"
        + (f" (missing: {', '.join(map(str, missing))})" if missing else "") + ". "
        f"Each fold is the run `cv_{name}_fold<k>`, tested on fold k and validated on fold k+1; the threshold rules "
        "are scored on the same cases. Mean ± SD over the fold means:", "",
        to_markdown(mean_sd_table(summary)), "",
        "3D Dice per fold (mean over the fold's cases):", "",
        to_markdown(fold_dice.round(3)), "",
        "![Dice per fold](figures/dice_by_fold.png) ![Volumes](figures/volumes_all_folds.png)", "",
    ])
    logger.info("Cross-validation %s:\n%s", name, to_markdown(mean_sd_table(summary)))
    result = {"name": name, "n_folds": n_folds, "folds_evaluated": present, "folds_missing": missing,
              "launched_now": launch["launched"], "methods": summary.to_dict("records")}
    _log_to_mlflow(summary, per_fold, figures, report)
    run = f"cv_{name}"
    return (RunArtifact(run, result), RunArtifact(run, per_fold), RunArtifact(run, pooled),
            RunArtifact(run, report), RunArtifact(run, figures))


def _log_to_mlflow(summary: pd.DataFrame, per_fold: pd.DataFrame, figures: dict[str, Figure], report: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is None:
        return
    log = ModelRunLogger(active.info.run_id)
    short = {MODEL: "model", "threshold_rule_tmax6": "rule_tmax6", "threshold_rule_tmax6_rcbf30": "rule_tmax6_rcbf30"}
    metrics = {}
    for record in summary.to_dict("records"):
        method = short.get(record["method"], record["method"])
        for column, _, _ in TABLE_METRICS:
            for stat in ("mean", "sd"):
                value = record[f"{column}_{stat}"]
                if np.isfinite(value):
                    metrics[f"cv_{method}_{column}_{stat}"] = value
    for record in per_fold.to_dict("records"):
        if np.isfinite(record["dice"]):
            metrics[f"cv_fold{record['fold']}_{short.get(record['method'], record['method'])}_dice"] = record["dice"]
    log.metrics(metrics)
    for file, figure in figures.items():
        log.figure(figure, f"cross_validation/{file}")
    log.text(report, "cross_validation/cv_report.md")
