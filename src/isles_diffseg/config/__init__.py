"""Configuration helpers that work with or without a Kedro session."""

from isles_diffseg.config.variants import (
    VARIANT_GROUPS,
    UnknownVariantError,
    load_variant_group,
    select_variant,
)

__all__ = ["VARIANT_GROUPS", "UnknownVariantError", "load_variant_group", "select_variant"]
