"""Optimizers, built from ``conf/base/variants/optimizer/<name>.yml``::

    type: adamw            # adamw | adam | sgd
    lr: 1.0e-4             # required; write 1.0e-4, not 1e-4, which YAML reads as a string
    weight_decay: 0.0      # default 0
    betas: [0.9, 0.999]    # adam/adamw only (default shown)
    eps: 1.0e-8            # adam/adamw only (default shown)
    momentum: 0.9          # sgd only (default 0.9), with nesterov: false

Weight decay is applied to matrices and convolution kernels only, never to 1-D (or 0-D) parameters:
biases and the gains/offsets of normalisation layers. Decay is a capacity control for the many
weights that mix features; biases and norm parameters are few, do not overfit, and decaying them
only does harm: it pulls a normalisation gain towards 0, shrinking the very scale the layer exists
to learn, and drags offsets towards 0. This holds for the L2 penalty of Adam/SGD as much as for
AdamW's decoupled decay, so the split applies to every type (the earlier codebase decayed everything).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

_META_KEYS = frozenset({"name", "description", "token"})
_KEYS_BY_TYPE: dict[str, frozenset[str]] = {
    "adamw": frozenset({"type", "lr", "weight_decay", "betas", "eps"}),
    "adam": frozenset({"type", "lr", "weight_decay", "betas", "eps"}),
    "sgd": frozenset({"type", "lr", "weight_decay", "momentum", "nesterov"}),
}
OPTIMIZER_TYPES: tuple[str, ...] = tuple(_KEYS_BY_TYPE)


def decays(parameter: torch.Tensor) -> bool:
    """Whether weight decay applies: matrices and kernels yes, biases and normalisation weights (ndim <= 1) no."""
    return parameter.ndim > 1


def weight_decay_groups(parameters: nn.Module | Iterable[torch.Tensor], weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into a decayed group and a non-decayed group (empty groups dropped).

    Parameters with ``requires_grad=False`` (frozen parts) are left out of the optimizer altogether.
    """
    tensors = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    trainable = [p for p in tensors if p.requires_grad]
    if not trainable:
        raise ValueError("the optimizer got no trainable parameters")
    decayed = [p for p in trainable if decays(p)]
    not_decayed = [p for p in trainable if not decays(p)]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": not_decayed, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def _where(config: Mapping[str, Any], key: str) -> str:
    return f"optimizer variant {config.get('name', '?')!r}: {key}"


def _number(config: Mapping[str, Any], key: str, default: float | None = None, *, positive: bool = False) -> float:
    """A finite float >= 0 (> 0 if ``positive``); a missing key without default is an error."""
    if key not in config:
        if default is None:
            raise ValueError(f"{_where(config, key)} is required")
        return default
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{_where(config, key)} must be a finite number, got {value!r} "
                         "(YAML reads 1e-4 as a string: write 1.0e-4)")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{_where(config, key)} must be {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def _betas(config: Mapping[str, Any]) -> tuple[float, float]:
    betas = config.get("betas", (0.9, 0.999))
    if (not isinstance(betas, list | tuple) or len(betas) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)):
        raise ValueError(f"{_where(config, 'betas')} must be two numbers in [0, 1), got {betas!r}")
    return float(betas[0]), float(betas[1])


def build_optimizer(
    config: Mapping[str, Any], parameters: nn.Module | Iterable[torch.Tensor], *, fused: bool = False
) -> torch.optim.Optimizer:
    """The optimizer of one optimizer variant over a model (or its parameters), decay split as above.

    ``fused`` picks torch's single-kernel implementation (same update, same state dict; CUDA parameters).
    """
    kind = config.get("type")
    if kind not in _KEYS_BY_TYPE:
        raise ValueError(f"{_where(config, 'type')} must be one of {list(OPTIMIZER_TYPES)}, got {kind!r}")
    unknown = set(config) - _KEYS_BY_TYPE[kind] - _META_KEYS
    if unknown:
        raise ValueError(f"optimizer variant {config.get('name', '?')!r}: unknown keys {sorted(unknown)} "
                         f"for type {kind!r} (allowed: {sorted(_KEYS_BY_TYPE[kind])})")
    lr = _number(config, "lr", positive=True)
    groups = weight_decay_groups(parameters, _number(config, "weight_decay", 0.0))
    if kind == "sgd":
        nesterov = config.get("nesterov", False)
        if not isinstance(nesterov, bool):
            raise ValueError(f"{_where(config, 'nesterov')} must be true or false, got {nesterov!r}")
        return torch.optim.SGD(groups, lr=lr, momentum=_number(config, "momentum", 0.9), nesterov=nesterov,
                               **({"fused": True} if fused else {}))
    optimizer_class = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=lr, betas=_betas(config), eps=_number(config, "eps", 1e-8, positive=True),
                           **({"fused": True} if fused else {}))
