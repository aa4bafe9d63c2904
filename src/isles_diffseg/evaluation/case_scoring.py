"""Scoring evaluated cases, one case per task, in a pool of processes.

Each case is independent (read its native ground truth and the prediction, build the threshold-rule masks,
compute every metric) and CPU-bound, mostly in NumPy/SciPy code that holds the GIL, so cases are scored
in separate processes. A task carries only small things, the prediction's file path rather than its
voxels, and the rows come back in the tasks' order: the table is the one a serial loop gives.
Processes are started with ``spawn``: the parent holds CUDA and threads, which a fork would copy badly.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from isles_diffseg.data.case_store import CaseStore
from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.evaluation.baselines import threshold_rule_masks
from isles_diffseg.evaluation.case_metrics import case_metrics
from isles_diffseg.evaluation.native_grid import read_native_mask


@dataclass(frozen=True)
class ScoringTask:
    """One case: its meta (native grid, mask and image files), its predicted mask as a NIfTI path (or the
    array, for an image that has no file), and whether and how to score the threshold rules beside it."""

    case_id: str
    meta: Mapping[str, Any]
    prediction: str | np.ndarray
    method: str
    fold: int | None
    case_store: str
    baselines: Mapping[str, Any] | None


def score_case(task: ScoringTask) -> list[dict[str, Any]]:
    """The metric rows of the model and of each threshold rule for one case."""
    gt, spacing = read_native_mask(task.meta["mask_file"])
    native = NativeGeometry.from_meta(task.meta)
    pred = task.prediction
    if isinstance(pred, str):
        pred = np.asarray(nib.load(pred).dataobj, dtype=np.uint8)
    methods = {task.method: np.asarray(pred, dtype=np.uint8)}
    if task.baselines is not None:
        brain = native.to_native(CaseStore(task.case_store).brain(task.case_id))
        methods.update(threshold_rule_masks(task.meta, brain, spacing, task.baselines))
    return [{"method": method, "case_id": task.case_id, "fold": task.fold, **case_metrics(mask, gt, spacing, native)}
            for method, mask in methods.items()]


def score_cases(tasks: Sequence[ScoringTask], workers: int) -> list[dict[str, Any]]:
    """All tasks' rows in task order, by ``workers`` processes (1: in this process)."""
    if workers <= 1 or len(tasks) <= 1:
        return [row for task in tasks for row in score_case(task)]
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return [row for rows in pool.map(score_case, tasks) for row in rows]
