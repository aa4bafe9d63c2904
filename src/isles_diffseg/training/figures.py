"""Validation figures: example grids, predicted vs true volumes, probability histograms, x_0 chains.

Figures are built as :class:`Figure` objects, outside pyplot: they need no backend (headless runs) and
never switch the one a notebook uses. Image arrays are (X, Y) in RAS order; they are shown transposed
with the origin low so anterior is up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def validation_grid(examples: list[dict[str, Any]], modalities: list[str]) -> Figure:
    """One row per example: the centre-slice modalities, GT, probability and uncertainty."""
    n_mod = len(modalities)
    columns = [*modalities, "ground truth", "prediction", "uncertainty"]
    fig = Figure(figsize=(2.2 * len(columns), 2.2 * len(examples)))
    axes = fig.subplots(len(examples), len(columns), squeeze=False)
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


def volume_scatter(true_volume: np.ndarray, predicted_volume: np.ndarray, unit: str) -> Figure:
    """One point per case, predicted against true lesion volume, with the identity line.

    Empty predictions lie on the x axis; scattered false positives lie far above the line.
    """
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.scatter(true_volume, predicted_volume, s=14, alpha=0.8)
    top = max(1.0, float(np.max(true_volume, initial=0)), float(np.max(predicted_volume, initial=0))) * 1.05
    ax.plot([0, top], [0, top], color="gray", linestyle="--", linewidth=1)
    # a little room below 0 so that empty predictions, the failure this figure is for, are not cut in half
    ax.set_xlim(-0.03 * top, top)
    ax.set_ylim(-0.03 * top, top)
    ax.set_xlabel(f"true lesion volume ({unit})")
    ax.set_ylabel(f"predicted lesion volume ({unit})")
    # no legend: any corner of it could hide cases (noise sits top left, missed lesions bottom right)
    ax.set_title(f"validation volumes, {len(true_volume)} cases (dashed: identity)", fontsize=9)
    fig.tight_layout()
    return fig


def probability_histogram(lesion_counts: np.ndarray, background_counts: np.ndarray, edges: np.ndarray) -> Figure:
    """Predicted probability of brain pixels inside and outside the true lesion, log-scale counts.

    Log scale because background pixels outnumber lesion pixels by orders of magnitude.
    """
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.stairs(background_counts, edges, label=f"outside lesion ({int(np.sum(background_counts))} px)")
    ax.stairs(lesion_counts, edges, label=f"inside lesion ({int(np.sum(lesion_counts))} px)")
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("brain pixels")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def denoising_chain_grid(examples: list[dict[str, Any]], modalities: list[str]) -> Figure:
    """One row per example: the first modality's centre slice, GT, then the x_0 estimate at each timestep."""
    n_mod = len(modalities)
    n_columns = 2 + len(examples[0]["chain_timesteps"])  # every example ran the same sampler
    fig = Figure(figsize=(2.2 * n_columns, 2.2 * len(examples)))
    axes = fig.subplots(len(examples), n_columns, squeeze=False)
    for row, example in zip(axes, examples, strict=True):
        k = example["image"].shape[0] // n_mod // 2  # centre slice of the 2.5D stack
        _show(row[0], example["image"][k * n_mod], modalities[0])
        _show(row[1], example["gt"], "ground truth")
        for ax, x0, t in zip(row[2:], example["chain_x0"], example["chain_timesteps"], strict=True):
            _show(ax, x0, f"x0 at t={t}")
        row[0].set_ylabel(example["case_id"], fontsize=7)
    fig.tight_layout()
    return fig


def _show(ax: Axes, panel: np.ndarray, title: str) -> None:
    ax.imshow(np.asarray(panel, dtype=np.float32).T, origin="lower", cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
