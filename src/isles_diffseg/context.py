"""Project context: exposes the variant groups as parameters ``variants.<group>``."""

from __future__ import annotations

from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.context import KedroContext

from isles_diffseg.config.variants import VARIANT_GROUPS


class ProjectContext(KedroContext):
    """Adds ``params:variants.<group>`` (all variants of a group, by name) to the parameters.

    Variant files are loaded through the config loader, so ``base``/``local``/``--env`` layering
    applies to them like to any other configuration.
    """

    @property
    def params(self) -> dict[str, Any]:
        params = dict(super().params)
        variants: dict[str, Any] = {}
        for group in VARIANT_GROUPS:
            try:
                variants[group] = self.config_loader[f"variants_{group}"]
            except MissingConfigException:
                variants[group] = {}
        params["variants"] = variants
        return params
