"""Denoisers and baselines, registered by architecture name.

Importing this package registers every architecture, so ``build_model(config)`` works for any
variant file in ``conf/base/variants/model/``.
"""

from isles_diffseg.models import diffswintr, medsegdiff, org_medsegdiff, unet_baseline  # noqa: F401  (registration)
from isles_diffseg.models.registry import (
    IncompatibleImageSizeError,
    build_model,
    check_image_size,
    count_parameters,
    known_architectures,
    register_model,
    size_multiple,
)

__all__ = ["IncompatibleImageSizeError", "build_model", "check_image_size", "count_parameters", "known_architectures", "register_model", "size_multiple"]
