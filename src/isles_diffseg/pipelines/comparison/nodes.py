"""Compare evaluated runs (and the threshold rules evaluated with them) in one table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from isles_diffseg.evaluation.report import to_markdown

logger = logging.getLogger(__name__)

_COLUMNS = ["dice", "abs_volume_diff_ml", "abs_lesion_count_diff", "lesion_f1", "dice_2d_lesion", "hd95_mm"]


def comparison_table(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (evaluated run or baseline): mean of each metric, plus case count and threshold.

    A threshold rule evaluated with several runs on the same cases appears once.
    """
    rows, seen = [], set()
    for summary in summaries:
        for method, agg in summary["methods"].items():
            is_run = method == summary["run_name"]
            key = (method, summary["details"].get("fold"), agg["n_cases"])
            if not is_run and key in seen:
                continue
            seen.add(key)
            row = {"method": method, "kind": "model" if is_run else "baseline", "cases": agg["n_cases"],
                   "fold": summary["details"].get("fold"), "threshold": summary["threshold"] if is_run else None}
            row.update({f"{c}_mean": agg.get(f"{c}_mean") for c in _COLUMNS})
            rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("dice_mean", ascending=False, ignore_index=True) if len(table) else table


def compare_runs(*summaries: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """The demo's final table: the runs evaluated in this `kedro run`, side by side with the rules."""
    table = comparison_table(list(summaries))
    text = "# Model comparison\n\n" + to_markdown(table.round(3)) + "\n"
    logger.info("Comparison:\n%s", to_markdown(table.round(3)))
    return table, text


def compare_saved_runs(saved: dict[str, Callable[[], dict[str, Any]]], comparison: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """All (or ``comparison.runs``, '+'-separated) evaluated runs found under data/08_reporting."""
    wanted = [r for r in str(comparison.get("runs") or "").split("+") if r]
    summaries = []
    for key, load in sorted(saved.items()):
        run = key.split("/")[0]
        if not wanted or run in wanted:
            summaries.append(load())
    missing = set(wanted) - {s["run_name"] for s in summaries}
    if missing:
        raise ValueError(f"comparison.runs names runs without an evaluation summary: {sorted(missing)}")
    if not summaries:
        raise ValueError("no evaluated run under data/08_reporting: run the evaluation pipeline first")
    return compare_runs(*summaries)
