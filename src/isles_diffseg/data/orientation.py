"""Exact (flip/transpose only) reorientation to RAS and back to the native voxel order.

Axis permutations and flips never resample, so the round trip native -> RAS -> native returns
the very same voxels; predictions written back this way overlay the input in any viewer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt


@dataclass(frozen=True)
class NativeGeometry:
    """What is needed to put a canonical (RAS) array back on a case's native grid."""

    affine: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> NativeGeometry:
        """From a case store's ``meta.json`` (``native_affine``, ``native_shape``)."""
        return cls(np.asarray(meta["native_affine"]), tuple(meta["native_shape"]))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        return nib.aff2axcodes(self.affine)

    def _to_ras(self) -> np.ndarray:
        return ornt.ornt_transform(ornt.io_orientation(self.affine), ornt.axcodes2ornt(("R", "A", "S")))

    def to_canonical(self, data: np.ndarray) -> np.ndarray:
        """Native voxel order -> RAS voxel order (extra trailing axes, e.g. channels, are kept)."""
        if tuple(data.shape[:3]) != self.shape:
            raise ValueError(f"array shape {data.shape[:3]} differs from the native grid {self.shape}")
        return np.ascontiguousarray(ornt.apply_orientation(data, self._to_ras()))

    def to_native(self, data: np.ndarray) -> np.ndarray:
        """RAS voxel order -> native voxel order; exact inverse of :meth:`to_canonical`."""
        back = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), ornt.io_orientation(self.affine))
        out = np.ascontiguousarray(ornt.apply_orientation(data, back))
        if tuple(out.shape[:3]) != self.shape:
            raise ValueError(f"canonical array {data.shape[:3]} does not map back to native grid {self.shape}")
        return out

    def canonical_affine(self) -> np.ndarray:
        return self.affine @ ornt.inv_ornt_aff(self._to_ras(), self.shape)

    def zooms(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the native axes, from the affine (what the NIfTI header's zooms hold)."""
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def canonical_zooms(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in np.sqrt((self.canonical_affine()[:3, :3] ** 2).sum(axis=0)))
