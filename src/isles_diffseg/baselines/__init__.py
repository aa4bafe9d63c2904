"""Non-learned baselines on the native grid: the clinical perfusion-threshold rules."""

from isles_diffseg.baselines.threshold_rule import (
    hemisphere_masks,
    relative_cbf,
    remove_small_components,
    tmax_rcbf_rule,
    tmax_rule,
)

__all__ = ["hemisphere_masks", "relative_cbf", "remove_small_components", "tmax_rcbf_rule", "tmax_rule"]
