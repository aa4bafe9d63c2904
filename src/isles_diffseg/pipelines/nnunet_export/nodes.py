"""The ingested cases as an nnU-Net v2 raw dataset, with our folds as its ``splits_final.json``.

Images are the channels our models see (the windowed maps of ``data.modalities``, in [0, 1]), put back on
each case's native grid with its original affine, one file per channel: ``imagesTr/<case>_0000.nii.gz``
in ``data.modalities`` order. Labels are the ground truth as the challenge reads it (scaled values > 0.5).
Because nnU-Net predicts on the grid of the images it is given, its predictions are on the native grids
and come straight back through ``evaluation.predictions``.

nnU-Net fold k validates on our test fold k (``data.fold=k``) and trains on the cases our model of fold k
trains on (``nnunet.train_cases: train``), or on those and our validation fold (``train_and_val``: nnU-Net
selects nothing on a validation set, so it may use those cases too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from isles_diffseg.data.case_store import CaseStore
from isles_diffseg.data.folds import roles_for_run
from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.datasets.nnunet_raw_dataset import NnUNetExport, dataset_folder_name
from isles_diffseg.evaluation.native_grid import read_native_mask

logger = logging.getLogger(__name__)

TRAIN_CASES = ("train", "train_and_val")


def nnunet_splits(folds: pd.DataFrame, data: dict[str, Any], train_cases: str = "train") -> list[dict[str, list[str]]]:
    """One ``{"train": [...], "val": [...]}`` per fold k = 0..n_folds-1: ``val`` is our test fold k, ``train`` the
    cases our fold-k model trains on (roles chosen as training chooses them, with ``data.val_fold``)."""
    if train_cases not in TRAIN_CASES:
        raise ValueError(f"nnunet.train_cases must be one of {TRAIN_CASES}, got {train_cases!r}")
    val_fold = data.get("val_fold")
    if val_fold is not None and not (isinstance(val_fold, str) and val_fold.lower() == "none"):
        raise ValueError(f"data.val_fold={val_fold!r}: every fold is exported, so the validation fold must follow the "
                         "test fold (data.val_fold null) or not exist (none); a fixed validation fold cannot be "
                         "the validation fold of every test fold")
    splits = []
    for fold in range(int(data["n_folds"])):
        roles = roles_for_run(folds, {**data, "fold": fold})
        trained_on = ("train", "val") if train_cases == "train_and_val" else ("train",)
        splits.append({"train": sorted(roles.loc[roles["role"].isin(trained_on), "case_id"]),
                       "val": sorted(roles.loc[roles["role"] == "test", "case_id"])})
    return splits


def _case_files(cases: CaseStore, case_id: str) -> Callable[[], dict[str, nib.Nifti1Image]]:
    """Reads and converts one case only when the dataset writes it (one case in memory at a time)."""

    def load() -> dict[str, nib.Nifti1Image]:
        case = cases.load(case_id)
        native = NativeGeometry.from_meta(case.meta)
        out = {}
        for channel in range(case.image.shape[3]):
            image = nib.Nifti1Image(native.to_native(case.image[..., channel]).astype(np.float32), native.affine)
            image.set_data_dtype(np.float32)
            out[f"imagesTr/{case_id}_{channel:04d}"] = image
        label, _ = read_native_mask(case.meta["mask_file"])
        if label.shape != native.shape:
            raise ValueError(f"{case_id}: mask {case.meta['mask_file']} has shape {label.shape}, the images "
                             f"{native.shape}")
        mask = nib.Nifti1Image(label, native.affine)
        mask.set_data_dtype(np.uint8)
        out[f"labelsTr/{case_id}"] = mask
        return out

    return load


def export_nnunet_dataset(cases: CaseStore, folds: pd.DataFrame, manifest: pd.DataFrame, data: dict[str, Any],
                          nnunet: dict[str, Any]) -> NnUNetExport:
    """dataset.json, splits_final.json and (lazily) the case files of ``Dataset<id>_<name>``."""
    folder = dataset_folder_name(nnunet["dataset_id"], nnunet["dataset_name"])
    metas = {m["case_id"]: m for m in cases.metas() if m["status"] == "ok"}
    case_ids = sorted(folds["case_id"])
    absent = [c for c in case_ids if c not in metas]
    if absent:
        raise ValueError(f"case_folds lists cases the case store does not hold (or holds as skipped): {absent}; "
                         "re-run `kedro run --pipelines data_processing`")
    unlabelled = [c for c in case_ids if not metas[c].get("mask_file")]
    if unlabelled:
        raise ValueError(f"nnU-Net training cases need ground truth; these have none: {unlabelled}")
    modalities = [list(metas[c]["modalities"]) for c in case_ids]
    if any(m != list(data["modalities"]) for m in modalities):
        raise ValueError(f"the case store holds the modalities {modalities[0]}, data.modalities is "
                         f"{list(data['modalities'])}; re-run ingestion with the modalities to export")
    splits = nnunet_splits(folds, data, str(nnunet.get("train_cases", "train")))
    roots = sorted(set(manifest.loc[manifest["case_id"].isin(case_ids), "source_root"].dropna())) \
        if "source_root" in manifest else []
    dataset_json = {
        # nnU-Net normalises a channel by its name: names other than CT / noNorm / zscore / rescale_to_0_1 get
        # per-image z-scoring, which suits maps already windowed to [0, 1].
        "channel_names": {str(i): modality for i, modality in enumerate(data["modalities"])},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(case_ids),
        "file_ending": ".nii.gz",
        "name": folder,
        "description": "ISLES'24 final infarct from CT perfusion maps, exported by isles_diffseg (nnunet_export): "
                       "windowed maps on each case's native grid; splits_final.json holds isles_diffseg's folds",
        "isles_diffseg": {"modalities": list(data["modalities"]), "window_preset": data.get("window_preset"),
                          "n_folds": int(data["n_folds"]), "seed": data.get("seed"),
                          "val_fold": data.get("val_fold"), "train_cases": nnunet.get("train_cases", "train"),
                          "data_root": ", ".join(roots) or None},
    }
    logger.info("nnU-Net export %s: %d cases, %d folds, channels %s", folder, len(case_ids), len(splits),
                dataset_json["channel_names"])
    return NnUNetExport(folder, dataset_json, splits, {c: _case_files(cases, c) for c in case_ids})
