"""Choose the probability threshold on the validation split (never on the test fold)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from isles_diffseg.metrics import dice_coefficient


def sweep_thresholds(probabilities: dict[str, np.ndarray], ground_truth: dict[str, np.ndarray],
                     candidates: Sequence[float]) -> pd.DataFrame:
    """Mean per-case 3D Dice (slice-store grid) of each candidate threshold."""
    if not probabilities:
        raise ValueError("no validation case to choose a threshold on; use evaluation.threshold.mode=fixed")
    rows = []
    for threshold in candidates:
        dices = [dice_coefficient((probabilities[c] >= threshold).astype(np.uint8), ground_truth[c])
                 for c in probabilities]
        rows.append({"threshold": float(threshold), "mean_dice_3d": float(np.mean(dices))})
    return pd.DataFrame(rows)


def best_threshold(sweep: pd.DataFrame) -> float:
    """The best candidate; ties go to the one closest to 0.5 (the unbiased default)."""
    best = sweep["mean_dice_3d"].max()
    tied = sweep.loc[np.isclose(sweep["mean_dice_3d"], best), "threshold"]
    return float(tied.iloc[np.argmin(np.abs(tied.to_numpy() - 0.5))])
