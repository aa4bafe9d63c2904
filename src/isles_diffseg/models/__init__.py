"""Denoisers and baselines, registered by architecture name.

Importing this package registers every architecture, so ``build_model(config)`` works for any
variant file in ``conf/base/variants/model/``.
"""

from isles_diffseg.models import diffswintr, medsegdiff, org_medsegdiff, unet_baseline  # noqa: F401  (registration)
from isles_diffseg.models.kinds import DIFFUSION, DISCRIMINATIVE, model_kind, segmentation_logits
from isles_diffseg.models.registry import (
    IncompatibleImageSizeError,
    architecture_kind,
    build_model,
    check_image_size,
    count_parameters,
    known_architectures,
    register_model,
    size_multiple,
)

__all__ = ["DIFFUSION", "DISCRIMINATIVE", "IncompatibleImageSizeError", "architecture_kind", "build_model", "check_image_size", "count_parameters", "known_architectures", "model_kind", "register_model", "segmentation_logits", "size_multiple"]
