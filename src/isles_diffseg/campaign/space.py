"""Search spaces for Optuna studies, as YAML files in ``conf/base/search_spaces/<name>.yml``.

A trial's parameters are the project's own ``--params`` keys: variant names (``training.loss``,
``training.optimizer``, ...) and recipe keys (``training.batch_size``, ``training.max_steps``, ...)::

    sampler: {type: tpe, seed: 0}                          # tpe | random | grid (grid: categorical params only)
    pruner: {type: median, n_startup_trials: 4, n_warmup_steps: 2000}   # any optuna.pruners class, by short name
    fixed:                                                 # --params shared by every trial
      training.recipe: train_100Kms_ampbfloat16
    params:                                                # what the sampler chooses
      training.optimizer: {type: categorical, choices: [adamw_1e4lr_wd00, adamw_5e5lr_wd00]}
      training.batch_size: {type: int, low: 16, high: 32, step: 16}
      training.ema_rate: {type: float, low: 0.99, high: 0.9999, log: true}

The objective is always the best validation 3D Dice (``val_dice_3d`` on the validation fold, or
``val_dice_3d_swept`` when ``training.val_thresholds`` is set: what the run selects its checkpoint on),
maximised; pruners see it at every validation step.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from isles_diffseg.campaign.grid import check_overrides

_PRUNERS = {
    "median": "MedianPruner", "percentile": "PercentilePruner", "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner", "threshold": "ThresholdPruner", "patient": "PatientPruner",
    "wilcoxon": "WilcoxonPruner", "none": "NopPruner",
}
_SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler"}
_PARAM_TYPES = {"categorical": {"choices"}, "int": {"low", "high", "step", "log"},
                "float": {"low", "high", "step", "log"}}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    params: dict[str, dict[str, Any]]
    fixed: dict[str, Any]
    sampler: dict[str, Any]
    pruner: dict[str, Any]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The trial's ``--params`` overrides: the fixed ones and what the sampler chose."""
        chosen = {}
        for key, spec in self.params.items():
            options = {k: v for k, v in spec.items() if k != "type"}
            if spec["type"] == "categorical":
                chosen[key] = trial.suggest_categorical(key, spec["choices"])
            elif spec["type"] == "int":
                chosen[key] = trial.suggest_int(key, **options)
            else:
                chosen[key] = trial.suggest_float(key, **options)
        return {**self.fixed, **chosen}

    def categorical_choices(self) -> dict[str, list[Any]]:
        return {k: list(spec["choices"]) for k, spec in self.params.items() if spec["type"] == "categorical"}


def load_space(path: Path | str) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--space {path}: no such file (search spaces live in conf/base/search_spaces/)")
    content = yaml.safe_load(path.read_text()) or {}
    where = f"search space {path}"
    if not isinstance(content, dict):
        raise ValueError(f"{where}: must be a mapping with 'params' (and optionally fixed, sampler, pruner)")
    unknown = set(content) - {"params", "fixed", "sampler", "pruner", "description"}
    if unknown:
        raise ValueError(f"{where}: unknown top-level keys {sorted(unknown)}")
    params = content.get("params") or {}
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{where}: 'params' must map at least one parameter to its range")
    for key, spec in params.items():
        _check_param(key, spec, where)
    fixed = dict(content.get("fixed") or {})
    check_overrides(params, where)
    check_overrides(fixed, f"{where} (fixed)")
    both = set(fixed) & set(params)
    if both:
        raise ValueError(f"{where}: {sorted(both)} are both fixed and searched")
    sampler = dict(content.get("sampler") or {"type": "tpe"})
    pruner = dict(content.get("pruner") or {"type": "median"})
    space = SearchSpace(path.stem, params, fixed, sampler, pruner)
    build_sampler(space)  # bad sampler or pruner settings fail here, before any job is submitted
    build_pruner(pruner)
    return space


def _check_param(key: str, spec: Any, where: str) -> None:
    if not isinstance(spec, dict) or spec.get("type") not in _PARAM_TYPES:
        raise ValueError(f"{where}: {key} needs 'type' (one of {sorted(_PARAM_TYPES)}) and its range")
    allowed = _PARAM_TYPES[spec["type"]]
    extra = set(spec) - allowed - {"type"}
    if extra:
        raise ValueError(f"{where}: {key} ({spec['type']}) does not take {sorted(extra)}; it takes {sorted(allowed)}")
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}: {key} needs a non-empty list of choices")
        if any(isinstance(c, (list, dict)) or "," in str(c) for c in choices):
            raise ValueError(f"{where}: {key}: choices must be single values (they travel through --params)")
    elif "low" not in spec or "high" not in spec or not spec["low"] < spec["high"]:
        raise ValueError(f"{where}: {key} needs low < high")


def _construct(module: Any, class_name: str, options: dict[str, Any], what: str) -> Any:
    cls = getattr(module, class_name)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise ValueError(f"{what} {class_name}: {exc} (its options: {list(inspect.signature(cls).parameters)})") from None
    return cls(**options)


def build_pruner(spec: dict[str, Any]) -> Any:
    import optuna

    options = {k: v for k, v in spec.items() if k != "type"}
    kind = spec.get("type", "median")
    if kind not in _PRUNERS:
        raise ValueError(f"pruner type {kind!r}: use one of {sorted(_PRUNERS)}")
    if kind == "patient":  # wraps another pruner
        wrapped = options.pop("wrapped_pruner", {"type": "median"})
        options["wrapped_pruner"] = build_pruner(wrapped)
    return _construct(optuna.pruners, _PRUNERS[kind], options, "pruner")


def build_sampler(space: SearchSpace) -> Any:
    import optuna

    options = {k: v for k, v in space.sampler.items() if k != "type"}
    kind = space.sampler.get("type", "tpe")
    if kind not in _SAMPLERS:
        raise ValueError(f"sampler type {kind!r}: use one of {sorted(_SAMPLERS)}")
    if kind == "grid":
        if len(space.categorical_choices()) != len(space.params):
            raise ValueError("sampler grid: every searched parameter must be categorical (a list of choices)")
        options["search_space"] = space.categorical_choices()
    return _construct(optuna.samplers, _SAMPLERS[kind], options, "sampler")


def grid_size(space: SearchSpace) -> int | None:
    if space.sampler.get("type") != "grid":
        return None
    size = 1
    for choices in space.categorical_choices().values():
        size *= len(choices)
    return size
