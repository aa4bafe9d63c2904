"""Slicing node: canonical volumes -> fixed-size axial slices in a memory-mapped store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from isles_diffseg.data.case_store import CaseStore
from isles_diffseg.data.slice_store import CaseSlices, SliceStore, SliceStoreWriter, lesion_free_keep_mask

logger = logging.getLogger(__name__)


def build_slice_store(store: CaseStore, manifest: pd.DataFrame, slicing: dict[str, Any], data: dict[str, Any]) -> Callable[[Path], SliceStore]:
    """A builder that the slice-store dataset calls with its path; it streams one case at a time."""
    ok = manifest[manifest["status"] == "ok"]
    if ok.empty:
        raise ValueError("no usable case: every case was skipped by ingestion (see case_manifest.csv)")
    image_size = int(slicing["image_size"])
    policy = slicing["lesion_free"]

    def build(path: Path) -> SliceStore:
        writer = SliceStoreWriter(
            path,
            n_slices=int(ok["n_slices"].sum()),
            channels=len(data["modalities"]),
            image_size=image_size,
            meta={
                "modalities": list(data["modalities"]),
                "window_preset": data["window_preset"],
                "context_slices": int(slicing["context_slices"]),
                "channel_layout": "slice_major",
                "mask_interpolation": slicing["mask_interpolation"],
            },
        )
        try:
            for case_id in ok["case_id"]:
                writer.add(CaseSlices.from_case(store.load(case_id), image_size, slicing["mask_interpolation"]))
            index = writer.index()
            keep = lesion_free_keep_mask(
                index,
                policy=policy["policy"],
                keep_fraction=float(policy.get("keep_fraction", 1.0)),
                drop_outside_brain=bool(policy.get("drop_outside_brain", True)),
                seed=int(data.get("seed", 0)),
            )
            result = writer.close(train_keep=keep)
        except BaseException:
            writer.discard()
            raise
        logger.info("Slice store: %d slices of %d cases, %d kept for training", len(result), len(ok), keep.sum())
        return result

    return build
