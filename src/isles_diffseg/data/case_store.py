"""On-disk store of preprocessed cases: one folder per case, viewable in any NIfTI viewer.

``<root>/<case_id>/`` holds ``image.nii.gz`` (X, Y, Z, C canonical RAS, int16 with a scale factor:
[0, 1] at ~1.5e-5 resolution in a quarter of float32's space), ``mask.nii.gz`` and ``brain.nii.gz``
(uint8) and ``meta.json``. A skipped case has only ``meta.json`` with ``status: failed`` and the
error, so the manifest lists why it is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from isles_diffseg.data.case_volume import CaseFailure, PreprocessedCase
from isles_diffseg.data.folder_swap import replacing_folder
from isles_diffseg.data.orientation import NativeGeometry

CaseOrFailure = PreprocessedCase | CaseFailure


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path, dtype: type) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_data_dtype(dtype)
    nib.save(image, str(path))


def write_case(root: Path, item: CaseOrFailure) -> dict[str, Any]:
    """Write one case (or its failure record) under ``root``; returns the meta written."""
    folder = root / item.case_id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if isinstance(item, CaseFailure):
        meta = {"case_id": item.case_id, "status": "failed", "error": item.error, "error_path": item.path}
    else:
        affine = item.geometry.canonical_affine()
        _save_nifti(item.image, affine, folder / "image.nii.gz", np.int16)
        _save_nifti(item.brain, affine, folder / "brain.nii.gz", np.uint8)
        if item.mask is not None:
            _save_nifti(item.mask, affine, folder / "mask.nii.gz", np.uint8)
        zooms = item.geometry.canonical_zooms()
        lesion_voxels = int(item.mask.sum()) if item.mask is not None else None
        meta = {
            **item.meta,
            "status": "ok",
            "error": None,
            "canonical_shape": list(item.image.shape[:3]),
            "canonical_zooms_mm": list(zooms),
            "brain_voxels": int(item.brain.sum()),
            "lesion_voxels": lesion_voxels,
            "lesion_volume_ml": None if lesion_voxels is None else lesion_voxels * float(np.prod(zooms)) / 1000.0,
        }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


class CaseStore:
    """Read access to a case store folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"case store {self.root} does not exist; run the ingestion pipeline")

    def metas(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*/meta.json"))]

    def ok_case_ids(self) -> list[str]:
        return [m["case_id"] for m in self.metas() if m["status"] == "ok"]

    def brain(self, case_id: str) -> np.ndarray:
        """The canonical field-of-view mask alone (without reading the image volume)."""
        return np.asarray(nib.load(str(self.root / case_id / "brain.nii.gz")).dataobj, dtype=np.uint8)

    def load(self, case_id: str) -> PreprocessedCase:
        folder = self.root / case_id
        meta = json.loads((folder / "meta.json").read_text())
        if meta["status"] != "ok":
            raise ValueError(f"{case_id} was skipped by ingestion: {meta['error']}")
        image = np.asarray(nib.load(str(folder / "image.nii.gz")).dataobj, dtype=np.float32)
        if image.ndim == 3:
            image = image[..., None]
        mask_path = folder / "mask.nii.gz"
        return PreprocessedCase(
            case_id=case_id,
            image=image,
            mask=np.asarray(nib.load(str(mask_path)).dataobj, dtype=np.uint8) if mask_path.exists() else None,
            brain=np.asarray(nib.load(str(folder / "brain.nii.gz")).dataobj, dtype=np.uint8),
            geometry=NativeGeometry.from_meta(meta),
            modalities=list(meta["modalities"]),
            meta=meta,
        )


def write_case_store(root: str | Path, cases: Mapping[str, CaseOrFailure | Callable[[], CaseOrFailure]]) -> None:
    """Write every case, one at a time: callables are evaluated lazily, so memory holds one case.

    The new store is written beside the old one and replaces it only once every case is written, so
    it mirrors the dataset (no stale case folders) and a run that fails part-way (``data.strict``, an
    exception, Ctrl-C) leaves the previous store whole.
    """
    with replacing_folder(root) as staging:
        for case_id, item in cases.items():
            started = time.perf_counter()
            value = item() if callable(item) else item
            if value.case_id != case_id:
                raise ValueError(f"case store entry {case_id!r} holds case {value.case_id!r}")
            meta = write_case(staging, value)
            meta["seconds"] = round(time.perf_counter() - started, 3)
            (staging / case_id / "meta.json").write_text(json.dumps(meta, indent=1))
