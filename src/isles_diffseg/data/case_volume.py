"""One case read, checked, reoriented to RAS and windowed: the unit that ingestion stores."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isles_diffseg.data.brain_mask import field_of_view_mask
from isles_diffseg.data.discovery import ALL_MODALITIES, CaseFiles
from isles_diffseg.data.mask_checks import mask_warnings
from isles_diffseg.data.nifti_io import CaseInputError, check_same_grid, read_volume
from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.data.windows import apply_window, window_for

logger = logging.getLogger(__name__)


@dataclass
class PreprocessedCase:
    """A case in canonical RAS voxel order.

    ``image`` is (X, Y, Z, C) float32 in [0, 1], one channel per modality in ``modalities`` order;
    ``mask`` and ``brain`` are (X, Y, Z) uint8 0/1 (``mask`` is None for cases without ground truth).
    ``geometry`` maps arrays back to the native grid; ``meta`` is JSON-serialisable bookkeeping.
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray | None
    brain: np.ndarray
    geometry: NativeGeometry
    modalities: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def preprocess_case(
    files: CaseFiles,
    modalities: Sequence[str],
    window_preset: Mapping[str, Sequence[float]],
    *,
    preset_name: str = "",
    require_mask: bool = True,
    mask_threshold: float = 0.5,
) -> PreprocessedCase:
    """Read ``modalities`` and the mask of one case; raise :class:`CaseInputError` on any problem."""
    unknown = [m for m in modalities if m not in ALL_MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {list(ALL_MODALITIES)}")
    case_id = files.case_id
    volumes = []
    for modality in modalities:
        path = files.modalities.get(modality)
        if path is None:
            raise CaseInputError(case_id, None, f"modality {modality!r} is missing (no {modality} file found)")
        volumes.append(read_volume(path, case_id, what=modality.upper()))
    reference = volumes[0]
    for modality, volume in zip(modalities[1:], volumes[1:], strict=True):
        check_same_grid(reference, volume, case_id, what=modality.upper())

    mask_volume = None
    if files.mask is not None:
        mask_volume = read_volume(files.mask, case_id, what="lesion mask")
        check_same_grid(reference, mask_volume, case_id, what="lesion mask")
    elif require_mask:
        raise CaseInputError(case_id, None, "lesion mask is missing (no *lesion-msk.nii[.gz] in ses-02)")

    geometry = NativeGeometry(affine=reference.affine, shape=tuple(reference.data.shape))
    raw = [v.data for v in volumes]
    brain = field_of_view_mask(raw)
    if not brain.any():
        raise CaseInputError(case_id, reference.path, "no finite, non-zero voxel: empty field of view")
    windowed = [
        apply_window(v, *window_for(window_preset, m, preset_name)) for m, v in zip(modalities, raw, strict=True)
    ]
    image = np.stack(windowed, axis=-1) * brain[..., None]
    mask = None
    findings: list[str] = []
    if mask_volume is not None:
        # Scaled uint16 masks (raw 65535, slope 1.5e-5) read as ~1.0; the threshold makes them 0/1.
        mask = (np.nan_to_num(mask_volume.data) > mask_threshold).astype(np.uint8)
        findings = mask_warnings(mask_volume.data, mask, brain, threshold=mask_threshold)
        for finding in findings:
            logger.warning("%s: %s (%s)", case_id, finding, mask_volume.path)

    meta = {
        "case_id": case_id,
        "modalities": list(modalities),
        "window_preset": preset_name,
        "native_shape": list(geometry.shape),
        "native_affine": geometry.affine.tolist(),
        "native_axcodes": "".join(geometry.axcodes),
        "native_zooms_mm": list(reference.zooms),
        "source_files": {m: str(v.path) for m, v in zip(modalities, volumes, strict=True)},
        "mask_file": str(files.mask) if files.mask else None,
        "discovery_notes": list(files.notes),
        "mask_warnings": findings,
    }
    return PreprocessedCase(
        case_id=case_id,
        image=geometry.to_canonical(image.astype(np.float32)),
        mask=geometry.to_canonical(mask) if mask is not None else None,
        brain=geometry.to_canonical(brain),
        geometry=geometry,
        modalities=list(modalities),
        meta=meta,
    )


@dataclass
class CaseFailure:
    """A case that ingestion skipped, with the reason (file and problem) kept for the manifest."""

    case_id: str
    error: str
    path: str | None = None
