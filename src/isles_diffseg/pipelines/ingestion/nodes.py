"""Ingestion nodes: discover cases, read/check/reorient/window them, list them in a manifest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from isles_diffseg.data.case_store import CaseOrFailure, CaseStore
from isles_diffseg.data.case_volume import CaseFailure, preprocess_case
from isles_diffseg.data.discovery import CaseFiles, discover_cases
from isles_diffseg.data.nifti_io import CaseInputError
from isles_diffseg.datasets.isles24_root_dataset import Isles24Root

logger = logging.getLogger(__name__)


def _case_job(files: CaseFiles, data: dict[str, Any], ingestion: dict[str, Any]) -> Callable[[], CaseOrFailure]:
    presets = ingestion["window_presets"]
    preset_name = data["window_preset"]
    if preset_name not in presets:
        raise KeyError(f"data.window_preset={preset_name!r} is not one of {sorted(presets)}")

    def run() -> CaseOrFailure:
        try:
            case = preprocess_case(
                files,
                data["modalities"],
                presets[preset_name],
                preset_name=preset_name,
                require_mask=data.get("require_mask", True),
                mask_threshold=ingestion.get("mask_threshold", 0.5),
            )
        except CaseInputError as exc:
            if data.get("strict", False):
                raise
            logger.warning("Skipping %s", exc)
            return CaseFailure(files.case_id, exc.problem, exc.path)
        logger.info("Ingested %s (%s, %d lesion voxels)", files.case_id, "x".join(map(str, case.image.shape)),
                    0 if case.mask is None else int(case.mask.sum()))
        return case

    return run


def ingest_cases(raw: Isles24Root, data: dict[str, Any], ingestion: dict[str, Any]) -> dict[str, Callable[[], CaseOrFailure]]:
    """One lazy job per discovered case; the case store runs them one at a time."""
    cases = discover_cases(raw.path)
    logger.info("Found %d cases under %s", len(cases), raw.path)
    return {files.case_id: _case_job(files, data, ingestion) for files in cases}


def build_case_manifest(store: CaseStore, raw: Isles24Root) -> pd.DataFrame:
    """One row per discovered case: status, reason if skipped, geometry, lesion volume, and the release
    folder the case was read from (the catalog's path, which may differ from what a log line claims)."""
    source_root = str(raw.path.resolve())
    rows = []
    for meta in store.metas():
        rows.append(
            {
                "case_id": meta["case_id"],
                "source_root": source_root,
                "status": meta["status"],
                "error": meta.get("error"),
                "error_path": meta.get("error_path"),
                "lesion_voxels": meta.get("lesion_voxels"),
                "lesion_volume_ml": meta.get("lesion_volume_ml"),
                "n_slices": (meta.get("canonical_shape") or [None] * 3)[2],
                "canonical_shape": "x".join(map(str, meta.get("canonical_shape") or [])),
                "native_shape": "x".join(map(str, meta.get("native_shape") or [])),
                "native_axcodes": meta.get("native_axcodes"),
                "native_zooms_mm": ",".join(f"{z:.4g}" for z in meta.get("native_zooms_mm") or []),
                "mask_file": meta.get("mask_file"),
                "discovery_notes": "; ".join(meta.get("discovery_notes") or []),
                "mask_warnings": "; ".join(meta.get("mask_warnings") or []),
                "seconds": meta.get("seconds"),
            }
        )
    manifest = pd.DataFrame(rows)
    failed = manifest[manifest["status"] != "ok"]
    if len(failed):
        logger.warning("%d of %d cases skipped: %s", len(failed), len(manifest), ", ".join(failed["case_id"]))
    implausible = manifest[manifest["mask_warnings"] != ""]
    if len(implausible):
        logger.warning("%d of %d cases have an implausible lesion mask (used anyway; see mask_warnings in the "
                       "case manifest): %s", len(implausible), len(manifest), ", ".join(implausible["case_id"]))
    return manifest
