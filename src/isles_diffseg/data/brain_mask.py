"""Brain / field-of-view mask from the perfusion maps themselves.

Perfusion maps are NaN (or exactly 0) outside the head, so "finite and non-zero in any map" is
the field of view; holes (ventricles with CBF ~ 0, the infarct core) are filled slice by slice
so that they stay inside the mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def field_of_view_mask(raw_channels: list[np.ndarray], min_component_voxels: int = 64) -> np.ndarray:
    """uint8 mask (X, Y, Z): finite in every channel, non-zero in at least one, holes filled per axial slice."""
    finite = np.logical_and.reduce([np.isfinite(c) for c in raw_channels])
    nonzero = np.logical_or.reduce([np.nan_to_num(c) != 0 for c in raw_channels])
    mask = finite & nonzero
    for z in range(mask.shape[2]):
        if mask[:, :, z].any():
            mask[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = sizes >= min(min_component_voxels, sizes.max())
        mask = keep[labels]
    return mask.astype(np.uint8)
