"""Tables, figures and the Markdown report of an evaluation (model vs baselines on the same cases).

Figures are :class:`Figure` objects built outside pyplot: no backend is needed to save them, and importing
this module (as ``%load_ext kedro.ipython`` does) leaves a notebook's inline backend alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from isles_diffseg.metrics import aggregate_case_metrics

# (column, label, higher is better)
TABLE_METRICS = [
    ("dice", "Dice 3D", True),
    ("abs_volume_diff_ml", "AVD mL", False),
    ("abs_lesion_count_diff", "count diff", False),
    ("lesion_f1", "lesion F1", True),
    ("dice_2d_lesion", "Dice 2D lesion slices", True),
    ("dice_2d_all", "Dice 2D all slices", True),
    ("hd95_mm", "HD95 mm", False),
    ("precision", "precision", True),
    ("recall", "recall", True),
]


def summarise_methods(case_metrics: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{method: aggregate}`` with mean/median/std/n_nan of every metric (see ``aggregate_case_metrics``)."""
    numeric = [c for c, _, _ in TABLE_METRICS] + ["gt_volume_ml", "pred_volume_ml"]
    out = {}
    for method, rows in case_metrics.groupby("method", sort=False):
        out[method] = aggregate_case_metrics(rows[numeric].to_dict("records"))
    return out


def metric_table(summary: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per method: mean ± sd of each metric (numbers as text, for Markdown and the console)."""
    rows = []
    for method, agg in summary.items():
        row = {"method": method, "cases": agg["n_cases"]}
        for column, label, _ in TABLE_METRICS:
            mean, std = agg.get(f"{column}_mean"), agg.get(f"{column}_std")
            row[label] = "n/a" if mean is None or np.isnan(mean) else f"{mean:.3f} ± {0.0 if np.isnan(std) else std:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def markdown_report(run_name: str, table: pd.DataFrame, case_metrics: pd.DataFrame, details: dict[str, Any]) -> str:
    model_rows = case_metrics[case_metrics["method"] == run_name].sort_values("dice", ascending=False)
    lines = [
        f"# Evaluation of `{run_name}`",
        "",
        f"Cases: {details['n_cases']} ({details['split']} split; test fold {details['fold']}, validation fold "
        f"{details.get('val_fold')} of {details.get('n_folds')}), dataset `{details['data_root']}`.",
        f"Sampling: {details['sampling']}. Threshold: {details['threshold']:.3f} ({details['threshold_mode']}"
        + (f"; note: {details['threshold_note']}" if details.get("threshold_note") else "") + "). "
        + (f"Connected components under {details['min_component_ml']:g} mL removed from the model's masks, as from "
           "the Tmax rules'." if details.get("min_component_ml") else "No post-processing of the model's masks."),
        "Metrics on each case's native grid; ISLES'24 conventions (both-empty cases score 1.0 Dice and F1).",
        "",
        "## Model vs baselines (mean ± sd over cases)",
        "",
        to_markdown(table),
        "",
        "## Per case",
        "",
        to_markdown(model_rows[["case_id", "dice", "abs_volume_diff_ml", "abs_lesion_count_diff", "lesion_f1",
                                "gt_volume_ml", "pred_volume_ml"]].round(3)),
        "",
        "Figures: `figures/` (overlays of the best, median and worst cases, Dice distribution, volumes).",
    ]
    return "\n".join(lines) + "\n"


def dice_distribution_figure(case_metrics: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    methods = list(dict.fromkeys(case_metrics["method"]))
    ax.boxplot([case_metrics.loc[case_metrics["method"] == m, "dice"] for m in methods], showmeans=True)
    for i, m in enumerate(methods, start=1):
        values = case_metrics.loc[case_metrics["method"] == m, "dice"].to_numpy()
        ax.scatter(np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, s=10, alpha=0.7)
    ax.set_xticks(range(1, len(methods) + 1), [m[:28] for m in methods], rotation=15, fontsize=7)
    ax.set_ylabel("3D Dice per case")
    ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    return fig


def volume_figure(case_metrics: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for method, rows in case_metrics.groupby("method", sort=False):
        ax.scatter(rows["gt_volume_ml"], rows["pred_volume_ml"], label=method[:28], s=14)
    top = float(max(case_metrics["gt_volume_ml"].max(), case_metrics["pred_volume_ml"].max(), 1.0))
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlabel("true lesion volume (mL)")
    ax.set_ylabel("predicted lesion volume (mL)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def overlay_figure(panels: list[dict[str, Any]]) -> Figure:
    """Rows of (first modality, ground truth, prediction, uncertainty) on the axial slice with most lesion."""
    fig = Figure(figsize=(9, 2.4 * len(panels)))
    axes = fig.subplots(len(panels), 4, squeeze=False)
    for row, panel in zip(axes, panels, strict=True):
        image = panel["image"].T
        for ax, title in zip(row, ("image", "ground truth", "prediction", "uncertainty"), strict=True):
            ax.imshow(image, cmap="gray", origin="lower")
            if title == "ground truth":
                ax.contour(panel["gt"].T, levels=[0.5], colors="lime", linewidths=0.8)
            elif title == "prediction":
                ax.imshow(np.ma.masked_less(panel["prob"].T, 0.05), cmap="autumn", alpha=0.6, vmin=0, vmax=1,
                          origin="lower")
                ax.contour(panel["gt"].T, levels=[0.5], colors="lime", linewidths=0.8)
            elif title == "uncertainty":
                ax.imshow(panel["uncertainty"].T, cmap="magma", alpha=0.8, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        row[0].set_ylabel(f"{panel['label']}\n{panel['case_id']}\nDice {panel['dice']:.2f}", fontsize=7)
    fig.tight_layout()
    return fig
