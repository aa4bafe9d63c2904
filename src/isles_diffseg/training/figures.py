"""Validation image grids: image channels, ground truth, prediction and uncertainty per example."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def validation_grid(examples: list[dict[str, np.ndarray]], modalities: list[str]) -> Figure:
    """One row per example: the centre-slice modalities, GT, probability and uncertainty.

    Arrays are (X, Y) in RAS order; they are shown transposed with the origin low so anterior is up.
    """
    n_mod = len(modalities)
    columns = [*modalities, "ground truth", "prediction", "uncertainty"]
    fig, axes = plt.subplots(len(examples), len(columns), figsize=(2.2 * len(columns), 2.2 * len(examples)),
                             squeeze=False)
    for row, example in zip(axes, examples, strict=True):
        k = example["image"].shape[0] // n_mod // 2  # centre slice of the 2.5D stack
        panels = [example["image"][k * n_mod + c] for c in range(n_mod)]
        panels += [example["gt"], example["prob"], example["uncertainty"]]
        for ax, panel, title in zip(row, panels, columns, strict=True):
            ax.imshow(np.asarray(panel, dtype=np.float32).T, origin="lower", cmap="magma" if title == "uncertainty"
                      else "gray", vmin=0, vmax=max(1e-6, float(np.max(panel))) if title == "uncertainty" else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        row[0].set_ylabel(example["case_id"], fontsize=7)
    fig.tight_layout()
    return fig
