"""Predictions back on each case's native grid, written as NIfTI with the original affine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from isles_diffseg.baselines.threshold_rule import remove_small_components
from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.data.slicing import SliceGeometry, slices_to_volume


@dataclass
class NativePrediction:
    """Native-grid arrays of one case: binary mask, probability and uncertainty."""

    case_id: str
    mask: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    affine: np.ndarray

    def images(self) -> dict[str, nib.Nifti1Image]:
        """``{case_id}_{pred,prob,uncertainty}`` NIfTI images sharing the input's affine."""
        out = {}
        for suffix, data, dtype in (("pred", self.mask, np.uint8), ("prob", self.probability, np.float32),
                                    ("uncertainty", self.uncertainty, np.float32)):
            image = nib.Nifti1Image(data.astype(dtype), self.affine)
            image.set_data_dtype(dtype)
            image.header.set_xyzt_units("mm")
            out[f"{self.case_id}_{suffix}"] = image
        return out


def to_native(
    case_id: str,
    probability: np.ndarray,
    uncertainty: np.ndarray,
    slice_geometry: SliceGeometry,
    native: NativeGeometry,
    threshold: float,
    min_component_ml: float = 0.0,
) -> NativePrediction:
    """Resample (Z, S, S) slice-grid maps to the canonical volume, then undo the reorientation.

    The mask is the thresholded native-grid probability (so it is as smooth as the probability map),
    not a nearest-neighbour upsampling of a low-resolution mask, without its connected components under
    ``min_component_ml`` mL at the native voxel size (0: all kept). The probability map is left as predicted.
    """
    prob = native.to_native(np.clip(slices_to_volume(probability, slice_geometry), 0.0, 1.0))
    spread = native.to_native(np.clip(slices_to_volume(uncertainty, slice_geometry), 0.0, None))
    mask = prob >= threshold
    if min_component_ml > 0:
        mask = remove_small_components(mask, native.zooms(), min_component_ml)
    return NativePrediction(case_id, mask.astype(np.uint8), prob.astype(np.float32), spread.astype(np.float32),
                            native.affine)


def read_native_mask(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Ground truth as the challenge reads it: scaled values > 0.5, plus the header voxel size in mm."""
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return (np.nan_to_num(data) > 0.5).astype(np.uint8), tuple(float(z) for z in image.header.get_zooms()[:3])
