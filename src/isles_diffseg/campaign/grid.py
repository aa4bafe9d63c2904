"""What a grid campaign trains: ``--params`` with alternatives, expanded into configurations, times folds.

``--params "training.loss=mse_loss_only|mse_with_aux_light,training.max_steps=2000"`` is Kedro's ``--params``
syntax (``key=value`` joined by commas) where a value may list alternatives joined by ``|``. Every combination
of the alternatives is one configuration; keys without alternatives are shared by all of them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Set by the campaign for every run, so a user's value would silently be overwritten or break resume.
RESERVED = {
    "data.fold": "--folds",
    "data.val_fold": "--val-fold",
    "training.run_name": "(the campaign names its runs)",
    "training.resume": "(the campaign resumes interrupted runs itself)",
    "evaluation.run": "(the campaign evaluates the run it trained)",
    "training.num_gpus": "--gpus (and --nodes)",
}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Configuration:
    """One point of the campaign: ``params`` are the ``--params`` overrides of each of its fold runs."""

    index: int
    params: dict[str, str]
    varying: dict[str, str] = field(default_factory=dict)  # the keys that differ between configurations

    @property
    def key(self) -> str:
        return f"c{self.index:02d}"

    @property
    def label(self) -> str:
        """How the report names it: the values that set it apart (the last part of each key)."""
        return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.varying.items()) or "single configuration"


def check_name(name: str, what: str = "--name") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(f"{what}={name!r} must be a folder name (letters, digits and . _ -)")
    return name


def check_overrides(params: Mapping[str, Any], where: str) -> None:
    """Keys must be dotted parameter paths and must not be ones the campaign sets for every run."""
    for key in params:
        if not _KEY.match(key):
            raise ValueError(f"{where}: {key!r} is not a dotted parameter name like training.loss")
        if key in RESERVED:
            raise ValueError(f"{where}: {key} is set by the campaign for each run; use {RESERVED[key]}")


def parse_grid(text: str) -> dict[str, list[str]]:
    """``"a.b=x|y,c.d=1"`` -> ``{"a.b": ["x", "y"], "c.d": ["1"]}`` (order kept, values as typed)."""
    axes: dict[str, list[str]] = {}
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--params item {item!r} is not key=value (alternatives: key=a|b)")
        key, _, value = (s.strip() for s in item.partition("="))
        if key in axes:
            raise ValueError(f"--params sets {key} twice; list its alternatives as {key}=a|b")
        values = [v.strip() for v in value.split("|")]
        if any(not v for v in values):
            raise ValueError(f"--params {item!r}: an empty value or alternative")
        if len(set(values)) != len(values):
            raise ValueError(f"--params {item!r}: an alternative is listed twice")
        axes[key] = values
    check_overrides(axes, "--params")
    return axes


def expand(axes: Mapping[str, list[str]]) -> list[Configuration]:
    """Every combination of the alternatives, the first key varying slowest."""
    varying = [k for k, values in axes.items() if len(values) > 1]
    configurations = []
    for index, combo in enumerate(itertools.product(*axes.values())):
        params = dict(zip(axes, combo, strict=True))
        configurations.append(Configuration(index, params, {k: params[k] for k in varying}))
    return configurations or [Configuration(0, {})]


def parse_folds(text: str | Iterable[int]) -> list[int]:
    """``--folds``: ``0-4``, ``0+2``, ``0,2`` or a single number; sorted, without repeats."""
    if not isinstance(text, str):
        return sorted({int(k) for k in text})
    folds: set[int] = set()
    for part in re.split(r"[+,]", text.strip()):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"--folds {text!r}: use a range (0-4), numbers joined by '+' or ',' (0+2), or one number")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise ValueError(f"--folds {text!r}: range {low}-{high} runs backwards")
        folds.update(range(low, high + 1))
    return sorted(folds)


def check_folds(folds: list[int], n_folds: int) -> list[int]:
    outside = [k for k in folds if not 0 <= k < n_folds]
    if not folds:
        raise ValueError("--folds selects no fold")
    if outside:
        raise ValueError(f"--folds: {outside} outside 0..{n_folds - 1} (data.n_folds={n_folds})")
    return folds


def check_variant_names(params: Mapping[str, Iterable[str]], variants: Mapping[str, Mapping[str, Any]]) -> None:
    """A ``training.<group>`` value must name a variant of that group: caught before anything is submitted."""
    from isles_diffseg.config.variants import UnknownVariantError
    from isles_diffseg.training.run_config import GROUP_OF_KEY

    for key, values in params.items():
        head, _, attribute = key.partition(".")
        if head != "training" or attribute not in GROUP_OF_KEY:
            continue
        group = GROUP_OF_KEY[attribute]
        for value in values:
            if value not in variants.get(group, {}):
                raise UnknownVariantError(group, value, list(variants.get(group, {})))


def run_name(campaign: str, configuration_key: str, fold: int) -> str:
    return f"{campaign}_{configuration_key}_fold{fold}"
