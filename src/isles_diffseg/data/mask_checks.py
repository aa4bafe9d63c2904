"""Plausibility of a lesion mask: problems that do not stop ingestion but deserve a human look.

A mask is still used (binarised at the threshold) when it holds values other than 0/1 after the
header's scale factor (a probability map, labels 0/255, a wrong ``scl_slope``) or when its lesion
covers more than half of the brain (an all-ones mask reads as a ~6 L lesion). Each finding becomes
a line in the case's ``mask_warnings``, shown in ``case_manifest.csv`` and logged.
"""

from __future__ import annotations

import numpy as np

# Scaled uint16 masks (raw 65535, scl_slope 1.5259e-05) read as 1.00002: float32 rounding, not a problem.
VALUE_TOLERANCE = 1e-3
MAX_LESION_FRACTION_OF_BRAIN = 0.5


def mask_warnings(scaled: np.ndarray, mask: np.ndarray, brain: np.ndarray, *, threshold: float) -> list[str]:
    """Findings about ``scaled`` (the mask as read, after scaling), its binarised ``mask`` and ``brain``."""
    findings = []
    finite = np.isfinite(scaled)
    off = ~finite | ((np.abs(scaled) > VALUE_TOLERANCE) & (np.abs(scaled - 1.0) > VALUE_TOLERANCE))
    if off.any():
        values = np.unique(np.where(finite, scaled, np.nan)[off])
        shown = ", ".join(f"{v:.4g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        findings.append(f"mask has {int(off.sum())} voxels with values other than 0/1 after scaling ({shown}); "
                        f"binarised at > {threshold:g}")
    lesion, brain_voxels = int(mask.sum()), int(brain.sum())
    if brain_voxels and lesion > MAX_LESION_FRACTION_OF_BRAIN * brain_voxels:
        findings.append(f"lesion of {lesion} voxels covers {lesion / brain_voxels:.0%} of the {brain_voxels} brain "
                        f"voxels (more than {MAX_LESION_FRACTION_OF_BRAIN:.0%}): check the mask")
    return findings
