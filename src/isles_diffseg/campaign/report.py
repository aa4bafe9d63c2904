"""The campaign report: one row per configuration, mean ± SD over its folds, beside the Tmax rules.

It reads only what the runs left (``data/08_reporting/<run>/case_metrics.csv``, written by each run's
evaluation), so it can be rebuilt at any time (``python -m isles_diffseg.campaign report --name ...``) and
covers whatever has finished. The per-fold and across-fold statistics are the cross-validation pipeline's
(:mod:`isles_diffseg.pipelines.cross_validation.nodes`). The threshold rules are scored on the same test
cases by every run's evaluation; each fold's rule rows are taken once. A UNet configuration is a row like
any other. Optuna studies add the trial table, the optimisation history and the parameter importances.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from isles_diffseg.evaluation.report import TABLE_METRICS, to_markdown
from isles_diffseg.pipelines.cross_validation.nodes import across_folds, fold_metrics, mean_sd_table

logger = logging.getLogger(__name__)

RULE_LABELS = {"threshold_rule_tmax6": "Tmax > 6 s (rule)", "threshold_rule_tmax6_rcbf30": "Tmax > 6 s and rCBF < 30 % (rule)"}
RULES = tuple(RULE_LABELS)
FIGURE_METRICS = (("dice", "3D Dice"), ("abs_volume_diff_ml", "AVD (mL)"), ("lesion_f1", "lesion F1"))


def pooled_case_metrics(runs: Sequence[Mapping[str, Any]], reporting_dir: Path) -> pd.DataFrame:
    """Per-case metrics of every evaluated run; ``method`` is the configuration key or the rule's name."""
    tables, rule_folds = [], set()
    for run in runs:
        path = reporting_dir / run["run_name"] / "case_metrics.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        table["fold"] = int(run["fold"])
        table["run_name"] = run["run_name"]
        model = table[table["method"] == run["run_name"]].assign(method=run["configuration"])
        tables.append(model)
        if int(run["fold"]) not in rule_folds:  # the rules do not depend on the configuration
            tables.append(table[table["method"].isin(RULES)])
            rule_folds.add(int(run["fold"]))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def metric_figure(per_fold: pd.DataFrame, order: list[str], labels: Mapping[str, str]) -> Figure:
    """Each metric by configuration: the mean over folds (bar) and every fold's mean (dots)."""
    fig = Figure(figsize=(4.0 * len(FIGURE_METRICS), max(3.0, 0.45 * len(order) + 1.2)))
    axes = fig.subplots(1, len(FIGURE_METRICS), sharey=True)
    positions = np.arange(len(order))
    for ax, (column, title) in zip(np.atleast_1d(axes), FIGURE_METRICS, strict=True):
        means = [per_fold.loc[per_fold["method"] == m, column].mean() for m in order]
        ax.barh(positions, means, color=["C0" if m not in RULES else "0.6" for m in order], alpha=0.6)
        for i, method in enumerate(order):
            values = per_fold.loc[per_fold["method"] == method, column].to_numpy(float)
            ax.scatter(values, np.full(len(values), i), color="k", s=12, zorder=3)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    first = np.atleast_1d(axes)[0]
    first.set_yticks(positions, [labels.get(m, m) for m in order], fontsize=7)
    first.invert_yaxis()
    fig.suptitle("mean over folds (bars) and each fold's mean (dots)", fontsize=9)
    fig.tight_layout()
    return fig


def optuna_section(study: Any, run_of_trial: Mapping[int, str]) -> tuple[pd.DataFrame, dict[str, Figure], list[str]]:
    """Trial table, history and importance figures of a study (what Optuna can compute so far)."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    rows = []
    for trial in study.get_trials(deepcopy=False):
        steps = sorted(trial.intermediate_values)
        rows.append({"trial": trial.number, "state": trial.state.name, "best_val_dice_3d": trial.value,
                     "run_name": run_of_trial.get(trial.number, ""), "last_validation_step": steps[-1] if steps else None,
                     **{f"param.{k}": v for k, v in trial.params.items()}})
    table = pd.DataFrame(rows)
    figures, notes = {}, []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental; they are what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            figures["optuna_history.png"] = optuna_plots.plot_optimization_history(study).figure
        else:
            notes.append("no trial has completed yet: no optimisation history")
        try:
            figures["optuna_importances.png"] = optuna_plots.plot_param_importances(study).figure
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:  # too few trials, or no parameter varied
            notes.append(f"parameter importances not computable yet ({exc})")
    return table, figures, notes


def build_report(manifest: Mapping[str, Any], configurations: Sequence[Mapping[str, Any]],
                 runs: Sequence[Mapping[str, Any]], reporting_dir: Path, study: Any = None,
                 run_of_trial: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Write ``<reporting_dir>/campaign_<name>/`` and return the summary (also what MLflow gets)."""
    name = manifest["name"]
    out = reporting_dir / f"campaign_{name}"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    labels = {**RULE_LABELS, **{c["key"]: c["label"] for c in configurations}}
    pooled = pooled_case_metrics(runs, reporting_dir)
    evaluated = sorted(set(pooled["run_name"])) if not pooled.empty else []
    missing = [r["run_name"] for r in runs if r["run_name"] not in evaluated]
    figures: dict[str, Figure] = {}
    lines = [f"# Campaign `{name}` ({manifest['kind']})", ""]
    summary_records: list[dict[str, Any]] = []
    if pooled.empty:
        lines += ["No run of this campaign has been evaluated yet.", ""]
        per_fold = pd.DataFrame()
    else:
        per_fold = fold_metrics(pooled)
        summary = across_folds(per_fold)
        keys = [c["key"] for c in configurations if c["key"] in set(summary["method"])]
        order = [*sorted(keys, key=lambda k: -summary.set_index("method").loc[k, "dice_mean"]),
                 *[r for r in RULES if r in set(summary["method"])]]
        summary = summary.set_index("method").loc[order].reset_index()
        summary.insert(1, "label", [labels.get(m, m) for m in summary["method"]])
        summary_records = summary.to_dict("records")
        table = mean_sd_table(summary.drop(columns="label"))
        table.insert(1, "configuration", [labels.get(m, m) for m in table["method"]])
        figures["metric_by_configuration.png"] = metric_figure(per_fold, order, labels)
        lines += [
            f"Runs evaluated: {len(evaluated)} of {len(runs)}" + (f" (not evaluated: {', '.join(missing)})"
                                                                   if missing else "") + ".",
            "Each row: the test-fold metrics of the configuration, mean ± SD over its folds' means (a fold's mean "
            "is over its test cases); configurations sorted by mean 3D Dice. Rules: the Tmax threshold rules on the "
            "same test cases.", "",
            to_markdown(table), "",
            "![metrics by configuration](figures/metric_by_configuration.png)", "",
        ]
        per_fold.to_csv(out / "campaign_fold_metrics.csv", index=False)
        pooled.to_csv(out / "campaign_case_metrics.csv", index=False)
        summary.to_csv(out / "campaign_summary.csv", index=False)
    if study is not None:
        trials, optuna_figures, notes = optuna_section(study, run_of_trial or {})
        figures.update(optuna_figures)
        trials.to_csv(out / "optuna_trials.csv", index=False)
        best = None
        with contextlib.suppress(ValueError):
            best = study.best_trial
        lines += ["## Optuna study", "",
                  "Objective: best validation 3D Dice (`val_dice_3d`, or `val_dice_3d_swept` when training sweeps "
                  "its validation threshold; validation fold, never the test fold), "
                  "maximised; pruned at validation steps." + (
                      f" Best: trial {best.number}, {best.value:.4f}, {best.params}." if best else ""), "",
                  to_markdown(trials.round(4).astype(object).where(trials.notna(), "")) if not trials.empty else "(no trial yet)", "",
                  *[f"![{f}](figures/{f})" for f in optuna_figures], "", *[f"- {n}" for n in notes], ""]
    for file, figure in figures.items():
        figure.savefig(out / "figures" / file, dpi=110)
    if study is not None:
        import matplotlib.pyplot as plt

        for file in optuna_figures:  # Optuna draws through pyplot, which keeps its figures until closed
            plt.close(figures[file])
    report = "\n".join(lines)
    (out / "campaign_report.md").write_text(report)
    result = {"name": name, "kind": manifest["kind"], "runs": len(runs), "runs_evaluated": evaluated,
              "runs_not_evaluated": missing, "rows": _jsonable(summary_records)}
    (out / "campaign_summary.json").write_text(json.dumps(result, indent=1))
    parent = (manifest.get("mlflow") or {}).get("parent_run_id")
    if parent:
        _log_to_mlflow(parent, summary_records, figures, out)
    logger.info("Campaign report: %s", out / "campaign_report.md")
    return result


def _jsonable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in records]


def _log_to_mlflow(run_id: str, records: list[dict[str, Any]], figures: dict[str, Figure], out: Path) -> None:
    from isles_diffseg.tracking import ModelRunLogger

    log = ModelRunLogger(run_id)
    metrics = {}
    for record in records:
        for column, _, _ in TABLE_METRICS:
            for stat in ("mean", "sd"):
                value = record.get(f"{column}_{stat}")
                if value is not None and np.isfinite(value):
                    metrics[f"campaign_{record['method']}_{column}_{stat}"] = value
    log.metrics(metrics)
    for file, figure in figures.items():
        log.figure(figure, f"campaign/{file}")
    for file in ("campaign_report.md", "campaign_summary.csv", "campaign_fold_metrics.csv", "optuna_trials.csv",
                 "campaign.json"):
        if (out / file).is_file():
            log.artifact(out / file, "campaign")
