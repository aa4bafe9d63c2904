"""A tiny segmentation task that any working recipe learns in seconds: bright noisy discs at 32 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from isles_diffseg.data.slice_store import CaseSlices, SliceStore, SliceStoreWriter
from isles_diffseg.data.slicing import SliceGeometry


def disc_slices(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(Z, 2, S, S) images and (Z, S, S) masks; a slice holds a disc with probability 3/4.

    Channel 0 shows the disc 0.3 brighter than a noisy background; channel 1 is a distractor (a
    brighter disc elsewhere that is not a lesion), so copying the brightest blob of both is wrong.
    """
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n_slices, 2, size, size), np.float32)
    masks = np.zeros((n_slices, size, size), np.uint8)
    for z in range(n_slices):
        base = 0.35 + 0.08 * rng.standard_normal((2, size, size))
        if rng.random() < 0.75:
            cy, cx = rng.uniform(8, size - 8, 2)
            radius = rng.uniform(3, 7)
            masks[z] = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            base[0] += 0.3 * masks[z]
        cy, cx = rng.uniform(6, size - 6, 2)
        base[1] += 0.4 * ((yy - cy) ** 2 + (xx - cx) ** 2 <= 16)
        images[z] = np.clip(base, 0, 1)
    return images, masks


def build_disc_store(path: Path, n_cases: int = 10, n_slices: int = 16, size: int = 32, seed: int = 0) -> tuple[SliceStore, pd.DataFrame]:
    """Cases 0-5 train, 6-7 validate, 8-9 test (case folds with roles, as the splits pipeline writes)."""
    rng = np.random.default_rng(seed)
    writer = SliceStoreWriter(path, n_slices=n_cases * n_slices, channels=2, image_size=size,
                              meta={"modalities": ["cbf", "tmax"], "window_preset": "baseline", "context_slices": 0,
                                    "channel_layout": "slice_major", "mask_interpolation": "nearest"})
    case_ids = [f"disc{i:02d}" for i in range(n_cases)]
    for case_id in case_ids:
        images, masks = disc_slices(rng, n_slices, size)
        writer.add(CaseSlices(case_id, images, masks, np.ones_like(masks),
                              SliceGeometry.plan((size, size, n_slices), size)))
    store = writer.close()
    roles = ["train"] * (n_cases - 4) + ["val", "val", "test", "test"]
    folds = pd.DataFrame({"case_id": case_ids, "fold": range(n_cases), "role": roles,
                          "lesion_volume_ml": [1.0] * n_cases})
    return store, folds
