"""Resolve the named variants of a training run and build its run name.

``training.<group>`` names a variant of each group (model, loss, optimizer, scheduler,
augmentation, diffusion, recipe); any recipe key given directly under ``training`` (e.g.
``training.max_steps=500000``) overrides the recipe. The model's ``image_channels`` and
``image_size`` always follow the slice store (modalities x (2k+1), slicing.image_size).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from isles_diffseg.config.variants import select_variant

# training.<key> -> variant group
GROUP_OF_KEY = {
    "model": "model",
    "loss": "loss",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "augmentation": "augmentation",
    "diffusion": "diffusion",
    "recipe": "training",
}
_RUN_KEYS = {"seed", "device", "resume", "run_name", "output_dir", "num_gpus"}


@dataclass
class RunConfig:
    names: dict[str, str]
    model: dict[str, Any]
    loss: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    augmentation: dict[str, Any]
    diffusion: dict[str, Any]
    recipe: dict[str, Any]
    seed: int = 42
    device: str = "auto"
    run_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.loss["kind"]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        return cls(**copy.deepcopy(dict(d)))


def resolve_run_config(
    training: Mapping[str, Any],
    variants: Mapping[str, Mapping[str, Any]],
    *,
    image_channels: int,
    image_size: int,
    now: datetime | None = None,
) -> RunConfig:
    chosen = {}
    for key, group in GROUP_OF_KEY.items():
        if not training.get(key):
            raise ValueError(f"training.{key} must name a {group} variant")
        chosen[key] = select_variant(variants.get(group, {}), training[key], group)
    recipe = chosen["recipe"]
    unknown = set(training) - set(GROUP_OF_KEY) - set(recipe) - _RUN_KEYS
    if unknown:
        raise ValueError(f"unknown training parameters {sorted(unknown)}; recipe keys are {sorted(recipe)}")
    for key, value in training.items():
        if key in recipe and key not in ("name", "description") and value is not None:
            recipe[key] = value
    chosen["model"].update(image_channels=int(image_channels), image_size=int(image_size))
    _check_compatible(chosen["model"], chosen["loss"])
    config = RunConfig(
        names={key: training[key] for key in GROUP_OF_KEY},
        **chosen,
        seed=int(training.get("seed", 42)),
        device=str(training.get("device", "auto")),
    )
    config.run_name = training.get("run_name") or build_run_name(config, now or datetime.now())
    return config


def _check_compatible(model: Mapping[str, Any], loss: Mapping[str, Any]) -> None:
    discriminative_model = model["architecture"] == "unet_baseline"
    if discriminative_model != (loss["kind"] == "discriminative"):
        raise ValueError(
            f"model {model['name']!r} ({model['architecture']}) cannot be trained with loss {loss['name']!r} "
            f"(kind {loss['kind']}): unet_baseline needs a discriminative loss (dice_bce), denoisers a diffusion loss"
        )


def _steps_token(steps: int) -> str:
    if steps >= 1_000_000 and steps % 1_000_000 == 0:
        return f"s{steps // 1_000_000}M"
    if steps >= 1000 and steps % 1000 == 0:
        return f"s{steps // 1000}K"
    return f"s{steps}"


def build_run_name(config: RunConfig, when: datetime) -> str:
    """``{model}_{batch}_{amp}_{optimizer}_{scheduler}_{steps}_{loss}_{aug}_{diffusion}_{timestamp}``,
    built from the chosen variants only (the grammar of the earlier codebase)."""
    recipe = config.recipe
    amp = {"bf16": "ampBF16", "fp16": "ampFP16"}.get(str(recipe.get("amp")), "ampNONE")
    parts = [
        config.names["model"],
        f"b{recipe['batch_size']}",
        amp,
        config.optimizer.get("token", config.names["optimizer"]),
        config.scheduler.get("token", config.names["scheduler"]),
        _steps_token(int(recipe["max_steps"])),
        config.loss.get("token", config.names["loss"]),
        config.augmentation.get("token", config.names["augmentation"]),
        config.diffusion.get("token", config.names["diffusion"]) if config.kind == "diffusion" else "noDiffusion",
        when.strftime("%Y-%m-%d_%H-%M-%S"),
    ]
    return "_".join(str(p) for p in parts)
