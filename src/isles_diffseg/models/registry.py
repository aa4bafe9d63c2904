"""Name -> builder registry for denoisers and baselines.

Every registered model is built from a variant config (``conf/base/variants/model/<name>.yml``)
whose ``architecture`` key picks the builder; the remaining keys are the builder's arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from isles_diffseg.models.kinds import DIFFUSION, check_kind

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}
_KINDS: dict[str, str] = {}

# Architectures that were removed, with what to do about a run or a variant file that still names one
# (the generic "unknown architecture" would not say why a run that trained fine no longer loads).
_RETIRED = {
    "unet_baseline": "the hand-written residual UNet (architecture unet_baseline) was replaced by MONAI's DynUNet "
                     "(architecture dynunet; the variants unet_baseline and unet_baseline_tiny_cpu keep their names). "
                     "A run trained with the old network cannot load into the new one: retrain it with "
                     "training.model=unet_baseline (or unet_baseline_tiny_cpu)",
}

# Keys a variant file may carry that are bookkeeping, not constructor arguments.
_NON_ARGUMENT_KEYS = {"architecture", "name", "description"}


def register_model(architecture: str, kind: str = DIFFUSION) -> Callable[[ModelBuilder], ModelBuilder]:
    """Class/function decorator adding a builder under ``architecture``, of model ``kind``
    (:mod:`isles_diffseg.models.kinds`: a diffusion denoiser or a segmentation network)."""
    check_kind(kind)

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if architecture in _BUILDERS and _BUILDERS[architecture] is not builder:
            raise ValueError(f"architecture {architecture!r} is already registered")
        _BUILDERS[architecture] = builder
        _KINDS[architecture] = kind
        return builder

    return decorator


def known_architectures() -> list[str]:
    return sorted(_BUILDERS)


def _unknown(architecture: Any) -> ValueError:
    if architecture in _RETIRED:
        return ValueError(f"model architecture {architecture!r} no longer exists: {_RETIRED[architecture]}")
    return ValueError(f"unknown model architecture {architecture!r}; known: {', '.join(known_architectures())}")


def architecture_kind(config: Mapping[str, Any]) -> str:
    """``diffusion`` or ``discriminative`` for the architecture a model variant names."""
    architecture = config.get("architecture")
    if architecture not in _KINDS:
        raise _unknown(architecture)
    return _KINDS[architecture]


def build_model(config: Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Build the model that ``config['architecture']`` names, with ``overrides`` applied on top.

    ``overrides`` is how the data configuration sets ``image_channels`` (modalities x (2k+1)).
    """
    if "architecture" not in config:
        raise ValueError(f"model config has no 'architecture' key: {dict(config)}")
    architecture = config["architecture"]
    if architecture not in _BUILDERS:
        raise _unknown(architecture)
    kwargs = {k: v for k, v in config.items() if k not in _NON_ARGUMENT_KEYS}
    kwargs.update(overrides)
    return _BUILDERS[architecture](**kwargs)


def size_multiple(config: Mapping[str, Any]) -> int:
    """The number every image side must be a multiple of for this model (its total downsampling).

    Read from the architecture's ``size_multiple`` with the config's own keys, without building the
    model, so settings can be checked before any work starts; 1 for an architecture that has none.
    """
    builder = _BUILDERS.get(config.get("architecture", ""))
    if builder is None:
        raise _unknown(config.get("architecture"))
    rule = getattr(builder, "size_multiple", None)
    if rule is None:
        return 1
    wanted = inspect.signature(rule).parameters
    return int(rule(**{k: v for k, v in config.items() if k in wanted}))


class IncompatibleImageSizeError(ValueError):
    """The image size is not a multiple of the model's downsampling factor."""


def check_image_size(model: Mapping[str, Any], image_size: int, *, model_setting: str,
                     size_setting: str = "slicing.image_size", hint: str = "") -> None:
    """Raise if ``image_size`` is not a positive multiple of the model's downsampling factor; the
    message names both settings, the sizes nearby that work and ``hint`` (what else to change)."""
    multiple = size_multiple(model)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise IncompatibleImageSizeError(f"{size_setting} must be a positive integer, got {image_size!r}")
    if image_size % multiple:
        below = image_size // multiple * multiple
        suggestions = [size for size in (below, below + multiple) if size > 0]
        raise IncompatibleImageSizeError(
            f"{size_setting}={image_size!r} does not suit {model_setting}={model.get('name', '?')!r}: "
            f"the {model.get('architecture')} model downsamples the image by {multiple}, so the size must be a "
            f"positive multiple of {multiple} (e.g. {' or '.join(map(str, suggestions))})" + (f"; {hint}" if hint else "")
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
