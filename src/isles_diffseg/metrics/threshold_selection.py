"""Choose the probability threshold on the validation split (never on the test fold)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from isles_diffseg.metrics.overlap import dice_coefficient


def case_dice_by_threshold(probability: np.ndarray, truth: np.ndarray, candidates: Sequence[float]) -> list[float]:
    """One case's 3D Dice at each candidate threshold."""
    return [dice_coefficient((probability >= threshold).astype(np.uint8), truth) for threshold in candidates]


def sweep_table(candidates: Sequence[float], per_case: Sequence[Sequence[float]]) -> pd.DataFrame:
    """Mean over cases of :func:`case_dice_by_threshold` rows, one table row per candidate."""
    means = np.asarray(per_case, dtype=float).mean(axis=0)
    return pd.DataFrame({"threshold": [float(t) for t in candidates], "mean_dice_3d": [float(m) for m in means]})


def sweep_thresholds(probabilities: dict[str, np.ndarray], ground_truth: dict[str, np.ndarray],
                     candidates: Sequence[float]) -> pd.DataFrame:
    """Mean per-case 3D Dice (slice-store grid) of each candidate threshold."""
    if not probabilities:
        raise ValueError("no validation case to choose a threshold on; use evaluation.threshold.mode=fixed")
    return sweep_table(candidates, [case_dice_by_threshold(probabilities[c], ground_truth[c], candidates)
                                    for c in probabilities])


def best_threshold(sweep: pd.DataFrame) -> float:
    """The best candidate; ties go to the one closest to 0.5 (the unbiased default)."""
    best = sweep["mean_dice_3d"].max()
    tied = sweep.loc[np.isclose(sweep["mean_dice_3d"], best), "threshold"]
    return float(tied.iloc[np.argmin(np.abs(tied.to_numpy() - 0.5))])


def grid_edge_note(sweep: pd.DataFrame, chosen: float) -> str | None:
    """Why the chosen threshold may not be the best one: it is the first or last candidate and validation
    Dice was still rising towards it (on the synthetic 256-px folds both models chose 0.8 of the then 0.2-0.8)."""
    ordered = sweep.sort_values("threshold").reset_index(drop=True)
    if len(ordered) < 2:
        return None
    for edge, neighbour, side in ((len(ordered) - 1, len(ordered) - 2, "largest"), (0, 1, "smallest")):
        at, before = ordered.loc[edge], ordered.loc[neighbour]
        if np.isclose(at["threshold"], chosen) and at["mean_dice_3d"] > before["mean_dice_3d"]:
            return (f"the sweep chose {chosen:g}, its {side} candidate, with validation Dice still rising towards it "
                    f"({before['threshold']:g}: {before['mean_dice_3d']:.3f} -> {chosen:g}: {at['mean_dice_3d']:.3f}); "
                    "the best threshold may lie outside evaluation.threshold.candidates: widen them")
    return None
