"""The clinical threshold rules, computed on the native grid of each evaluated case."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from isles_diffseg.baselines.threshold_rule import tmax_rcbf_rule, tmax_rule
from isles_diffseg.data.nifti_io import read_volume
from isles_diffseg.data.orientation import NativeGeometry

TMAX_RULE = "threshold_rule_tmax6"
TMAX_RCBF_RULE = "threshold_rule_tmax6_rcbf30"


def threshold_rule_masks(case_meta: Mapping[str, Any], brain_native: np.ndarray, spacing_mm: tuple[float, float, float],
                         params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{method: native uint8 mask}`` for the Tmax rule and its rCBF-core variant.

    The maps are read from the same files ingestion used (``source_files`` in the case meta), in
    native units (s, mL/100 g/min); rCBF's left-right axis is found from the native orientation.
    """
    sources = case_meta["source_files"]
    if "tmax" not in sources:
        raise ValueError(f"{case_meta['case_id']}: the threshold rules need Tmax among data.modalities")
    tmax = read_volume(sources["tmax"], case_meta["case_id"], what="TMAX").data
    threshold_s = float(params.get("tmax_threshold_s", 6.0))
    min_ml = float(params.get("min_component_ml", 1.0))
    masks = {TMAX_RULE: tmax_rule(tmax, brain_native, spacing_mm, threshold_s, min_ml).astype(np.uint8)}
    if "cbf" in sources:
        cbf = read_volume(sources["cbf"], case_meta["case_id"], what="CBF").data
        native = NativeGeometry.from_meta(case_meta)
        axis_lr = [code in ("L", "R") for code in native.axcodes].index(True)
        masks[TMAX_RCBF_RULE] = tmax_rcbf_rule(
            tmax, cbf, brain_native, spacing_mm, axis_lr=axis_lr, tmax_threshold_s=threshold_s,
            rcbf_threshold=float(params.get("rcbf_threshold", 0.3)), min_component_ml=min_ml,
        ).astype(np.uint8)
    return masks
