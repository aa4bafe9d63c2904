"""Reading NIfTI volumes with checks that name the file and the problem."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


class CaseInputError(ValueError):
    """A case cannot be used: the message names the file and what is wrong with it."""

    def __init__(self, case_id: str, path: Path | str | None, problem: str):
        self.case_id, self.path, self.problem = case_id, str(path) if path else None, problem
        where = f" ({path})" if path else ""
        super().__init__(f"{case_id}: {problem}{where}")


@dataclass
class Volume:
    """A 3D array in scaled (physical) units with the header geometry it was stored on."""

    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]
    path: Path


def read_volume(path: Path, case_id: str, *, what: str) -> Volume:
    """Read scaled voxel values (``scl_slope``/``scl_inter`` applied) as float32, checked to be 3D.

    A trailing singleton 4th axis is dropped; a real 4D series is refused. Empty, unreadable and
    truncated files raise :class:`CaseInputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseInputError(case_id, path, f"{what} file is missing")
    if path.stat().st_size == 0:
        raise CaseInputError(case_id, path, f"{what} file is empty (0 bytes)")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for a bad header
        raise CaseInputError(case_id, path, f"{what} file is not a readable NIfTI: {exc}") from exc
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CaseInputError(case_id, path, f"{what} must be a 3D volume, got shape {image.shape}")
    if min(shape) == 0:
        raise CaseInputError(case_id, path, f"{what} has an empty dimension, shape {image.shape}")
    try:
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise CaseInputError(case_id, path, f"{what} file is truncated or corrupt: {exc}") from exc
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64), zooms=zooms, path=path)


def check_same_grid(reference: Volume, other: Volume, case_id: str, *, what: str, atol: float = 1e-3) -> None:
    """Refuse a channel or mask whose shape or affine differs from the reference volume's."""
    if reference.data.shape != other.data.shape:
        raise CaseInputError(
            case_id,
            other.path,
            f"{what} grid {other.data.shape} differs from {reference.path.name} grid {reference.data.shape}",
        )
    if not np.allclose(reference.affine, other.affine, atol=atol):
        raise CaseInputError(
            case_id, other.path, f"{what} affine differs from that of {reference.path.name} (not co-registered)"
        )
