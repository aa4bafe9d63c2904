"""Axial 2D slices at a fixed size, and the exact way back to the canonical volume.

Each axial plane (X, Y) of a canonical RAS volume is zero-padded to a centred square, which keeps
the in-plane aspect ratio, then resampled to ``image_size``. Images use bilinear interpolation with
anti-aliasing; masks are re-binarised (anti-aliased bilinear, then >= 0.5) or nearest, never soft.
The inverse resamples back to the square and removes the padding, so with ``image_size`` equal to
the padded size the round trip returns the original mask voxel for voxel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

MaskInterpolation = Literal["rebinarise", "nearest"]


@dataclass(frozen=True)
class SliceGeometry:
    """In-plane padding/resampling of one case; JSON-serialisable through :meth:`to_dict`."""

    canonical_shape: tuple[int, int, int]
    square: int
    pad_x: tuple[int, int]
    pad_y: tuple[int, int]
    image_size: int

    @classmethod
    def plan(cls, canonical_shape: tuple[int, int, int], image_size: int) -> SliceGeometry:
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        x, y, _ = canonical_shape
        square = max(x, y)
        px, py = square - x, square - y
        return cls(tuple(canonical_shape), square, (px // 2, px - px // 2), (py // 2, py - py // 2), image_size)

    @classmethod
    def from_dict(cls, d: dict) -> SliceGeometry:
        return cls(tuple(d["canonical_shape"]), d["square"], tuple(d["pad_x"]), tuple(d["pad_y"]), d["image_size"])

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _resize(planes: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) planes to (N, C, size, size); identity when already that size."""
    if planes.shape[-1] == size and planes.shape[-2] == size:
        return planes
    if mode == "nearest":
        return F.interpolate(planes, size=(size, size), mode="nearest-exact")
    downsampling = planes.shape[-1] > size
    return F.interpolate(planes, size=(size, size), mode="bilinear", align_corners=False, antialias=downsampling)


def _to_planes(volume: np.ndarray, geometry: SliceGeometry) -> torch.Tensor:
    """(X, Y, Z[, C]) -> padded (Z, C, square, square) float32 tensor."""
    if tuple(volume.shape[:3]) != geometry.canonical_shape:
        raise ValueError(f"volume shape {volume.shape[:3]} differs from the planned {geometry.canonical_shape}")
    vol = volume if volume.ndim == 4 else volume[..., None]
    padded = np.pad(vol.astype(np.float32, copy=False), (geometry.pad_x, geometry.pad_y, (0, 0), (0, 0)))
    return torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 3, 0, 1)))


def image_to_slices(image: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """(X, Y, Z, C) float image -> (Z, C, S, S) float32 slices."""
    return _resize(_to_planes(image, geometry), geometry.image_size, "bilinear").numpy()


def mask_to_slices(mask: np.ndarray, geometry: SliceGeometry, interpolation: MaskInterpolation = "rebinarise") -> np.ndarray:
    """(X, Y, Z) 0/1 mask -> (Z, S, S) uint8 0/1 slices."""
    if interpolation not in ("rebinarise", "nearest"):
        raise ValueError(f"mask interpolation must be 'rebinarise' or 'nearest', got {interpolation!r}")
    planes = _resize(_to_planes(mask, geometry), geometry.image_size, interpolation)
    return (planes[:, 0] >= 0.5).to(torch.uint8).numpy()


def slices_to_volume(slices: np.ndarray, geometry: SliceGeometry, *, binary: bool = False) -> np.ndarray:
    """(Z, S, S) slices -> canonical (X, Y, Z) volume.

    Probabilities are resampled bilinearly; ``binary=True`` resamples a 0/1 mask the same way and
    re-binarises at 0.5 so the result stays 0/1 (uint8).
    """
    z = geometry.canonical_shape[2]
    if slices.shape != (z, geometry.image_size, geometry.image_size):
        raise ValueError(
            f"expected slices of shape {(z, geometry.image_size, geometry.image_size)}, got {slices.shape}"
        )
    planes = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
    planes = _resize(planes, geometry.square, "bilinear")[:, 0].numpy()
    x0, y0 = geometry.pad_x[0], geometry.pad_y[0]
    x, y, _ = geometry.canonical_shape
    volume = np.ascontiguousarray(planes[:, x0 : x0 + x, y0 : y0 + y].transpose(1, 2, 0))
    return (volume >= 0.5).astype(np.uint8) if binary else volume
