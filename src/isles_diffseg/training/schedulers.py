"""Step-based learning-rate schedules, built from ``conf/base/variants/scheduler/<name>.yml``::

    type: warmup_cosine        # constant | warmup_cosine | warmup_constant
    warmup_fraction: 0.1       # of max_steps ... or warmup_steps: 1000 (absolute), exactly one of them
    warmup_start_factor: 0.01  # default; the warmup starts at this fraction of the peak lr, not at 0
    min_lr_factor: 0.0         # warmup_cosine only (default 0): the factor reached at max_steps

The scheduler is a ``LambdaLR`` stepped once per OPTIMIZER step, so the lr used by optimizer step
``s`` (counting from 0) is ``peak * factor(s)``:

- linear warmup: ``factor = start + (1 - start) * s / W`` for ``s < W``, reaching 1 at ``s = W``;
- cosine: ``factor = min + (1 - min) * (1 + cos(pi * (s - W) / (max_steps - W))) / 2``, so half-way
  through the decay it is half-way between 1 and ``min``, and ``min`` at ``s = max_steps``.

A warmup as long as the run or longer is allowed (smoke tests run production schedules for a few
steps) but logged as a warning: the lr then never reaches its peak.

The factor is a small dataclass rather than a closure: ``LambdaLR.state_dict`` saves (and
``load_state_dict`` restores) the attributes of callable objects but silently drops lambdas, and a
dataclass also pickles, so a resumed run continues with exactly the same learning rates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

logger = logging.getLogger(__name__)

DEFAULT_WARMUP_START_FACTOR = 0.01
_META_KEYS = frozenset({"name", "description", "token"})
_WARMUP_KEYS = frozenset({"warmup_fraction", "warmup_steps", "warmup_start_factor"})
_KEYS_BY_TYPE: dict[str, frozenset[str]] = {
    "constant": frozenset({"type"}),
    "warmup_constant": frozenset({"type"}) | _WARMUP_KEYS,
    "warmup_cosine": frozenset({"type", "min_lr_factor"}) | _WARMUP_KEYS,
}
SCHEDULER_TYPES: tuple[str, ...] = tuple(_KEYS_BY_TYPE)


def linear_warmup_factor(step: int, warmup_steps: int, start_factor: float) -> float:
    """``start_factor`` at step 0, rising linearly to 1 at ``warmup_steps`` (and 1 from there on)."""
    if step >= warmup_steps:
        return 1.0
    return start_factor + (1.0 - start_factor) * step / warmup_steps


def cosine_decay_factor(progress: float, min_factor: float) -> float:
    """Half a cosine from 1 (progress 0) down to ``min_factor`` (progress >= 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupThenDecay:
    """The lr factor of one optimizer step: linear warmup, then constant or cosine decay.

    Not frozen: ``LambdaLR.load_state_dict`` restores it by updating its ``__dict__``.
    """

    warmup_steps: int
    total_steps: int
    start_factor: float = DEFAULT_WARMUP_START_FACTOR
    decay: str = "constant"  # constant | cosine
    min_factor: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return linear_warmup_factor(step, self.warmup_steps, self.start_factor)
        if self.decay == "constant":
            return 1.0
        # max(..., 1): a warmup as long as the run leaves no decay phase, only steps past the end.
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return cosine_decay_factor(progress, self.min_factor)


def _where(config: Mapping[str, Any], key: str) -> str:
    return f"scheduler variant {config.get('name', '?')!r}: {key}"


def _unit_interval(config: Mapping[str, Any], key: str, default: float, *, below_one: bool = False) -> float:
    """A number in [0, 1] (or [0, 1) with ``below_one``), ``default`` when absent."""
    value = config.get(key, default)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not (0.0 <= value < 1.0 if below_one else 0.0 <= value <= 1.0):
        raise ValueError(f"{_where(config, key)} must be a number in [0, {'1)' if below_one else '1]'}, got {value!r}")
    return float(value)


def resolve_warmup_steps(config: Mapping[str, Any], max_steps: int) -> int:
    """Warmup length in optimizer steps, from ``warmup_steps`` or ``warmup_fraction`` of ``max_steps``."""
    given = _WARMUP_KEYS.intersection(config) - {"warmup_start_factor"}
    if len(given) != 1:
        raise ValueError(f"{_where(config, 'warmup_fraction / warmup_steps')}: give exactly one of them, "
                         f"got {sorted(given) or 'neither'}")
    if "warmup_steps" in config:
        steps = config["warmup_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"{_where(config, 'warmup_steps')} must be an integer >= 0, got {steps!r}")
    else:
        steps = math.floor(_unit_interval(config, "warmup_fraction", 0.0, below_one=True) * max_steps)
    if steps >= max_steps:
        # Legitimate in smoke tests that run a production schedule for a few steps, a mistake otherwise.
        logger.warning("scheduler variant %r: the warmup (%d steps) is not shorter than the run (%d steps); "
                       "the lr never reaches its peak", config.get("name", "?"), steps, max_steps)
    return steps


def build_schedule(config: Mapping[str, Any], max_steps: int) -> WarmupThenDecay:
    """The lr factor function of one scheduler variant for a run of ``max_steps`` optimizer steps."""
    kind = config.get("type")
    if kind not in _KEYS_BY_TYPE:
        raise ValueError(f"{_where(config, 'type')} must be one of {list(SCHEDULER_TYPES)}, got {kind!r}")
    unknown = set(config) - _KEYS_BY_TYPE[kind] - _META_KEYS
    if unknown:
        raise ValueError(f"scheduler variant {config.get('name', '?')!r}: unknown keys {sorted(unknown)} "
                         f"for type {kind!r} (allowed: {sorted(_KEYS_BY_TYPE[kind])})")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps <= 0:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    if kind == "constant":
        return WarmupThenDecay(warmup_steps=0, total_steps=max_steps)
    return WarmupThenDecay(
        warmup_steps=resolve_warmup_steps(config, max_steps),
        total_steps=max_steps,
        start_factor=_unit_interval(config, "warmup_start_factor", DEFAULT_WARMUP_START_FACTOR),
        decay="cosine" if kind == "warmup_cosine" else "constant",
        min_factor=_unit_interval(config, "min_lr_factor", 0.0),
    )


def build_scheduler(config: Mapping[str, Any], optimizer: torch.optim.Optimizer, max_steps: int) -> LambdaLR:
    """A ``LambdaLR`` over ``optimizer``, to be stepped once after every optimizer step."""
    return LambdaLR(optimizer, lr_lambda=build_schedule(config, max_steps))
