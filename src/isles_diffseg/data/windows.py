"""Per-modality intensity windows: clip to [low, high] and map linearly to [0, 1].

Presets live in ``conf/base/parameters_ingestion.yml`` (``ingestion.window_presets``); this module
only applies them. Non-finite values (NaN outside the head, inf in MTT) become 0 after
windowing, the same value as the low end, so background never carries a spurious signal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def window_for(preset: Mapping[str, Sequence[float]], modality: str, preset_name: str = "") -> tuple[float, float]:
    """The (low, high) window of ``modality`` in ``preset``, validated."""
    if modality not in preset:
        raise KeyError(
            f"window preset {preset_name!r} has no window for modality {modality!r}; it covers {sorted(preset)}"
        )
    low, high = (float(v) for v in preset[modality])
    if not high > low:
        raise ValueError(f"window preset {preset_name!r}: {modality} window [{low}, {high}] is empty")
    return low, high


def apply_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high], rescale to [0, 1]; NaN/inf -> 0. Returns float32."""
    out = (np.clip(values, low, high) - low) / (high - low)
    out[~np.isfinite(values)] = 0.0
    return out.astype(np.float32, copy=False)
