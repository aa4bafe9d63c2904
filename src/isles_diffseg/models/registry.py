"""Name -> builder registry for denoisers and baselines.

Every registered model is built from a variant config (``conf/base/variants/model/<name>.yml``)
whose ``architecture`` key picks the builder; the remaining keys are the builder's arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}

# Keys a variant file may carry that are bookkeeping, not constructor arguments.
_NON_ARGUMENT_KEYS = {"architecture", "name", "description"}


def register_model(architecture: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Class/function decorator adding a builder under ``architecture``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if architecture in _BUILDERS and _BUILDERS[architecture] is not builder:
            raise ValueError(f"architecture {architecture!r} is already registered")
        _BUILDERS[architecture] = builder
        return builder

    return decorator


def known_architectures() -> list[str]:
    return sorted(_BUILDERS)


def build_model(config: Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Build the model that ``config['architecture']`` names, with ``overrides`` applied on top.

    ``overrides`` is how the data configuration sets ``image_channels`` (modalities x (2k+1)).
    """
    if "architecture" not in config:
        raise ValueError(f"model config has no 'architecture' key: {dict(config)}")
    architecture = config["architecture"]
    if architecture not in _BUILDERS:
        raise ValueError(
            f"unknown model architecture {architecture!r}; known: {', '.join(known_architectures())}"
        )
    kwargs = {k: v for k, v in config.items() if k not in _NON_ARGUMENT_KEYS}
    kwargs.update(overrides)
    return _BUILDERS[architecture](**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
