"""Resolve the named variants of a training run and build its run name.

``training.<group>`` names a variant of each group (model, loss, optimizer, scheduler,
augmentation, diffusion, recipe); any recipe key given directly under ``training`` (e.g.
``training.max_steps=500000``) overrides the recipe. The model's ``image_channels`` and
``image_size`` always follow the slice store (modalities x (2k+1), slicing.image_size). The recipe key
``val_diffusion`` names a diffusion variant to sample validation with (same process, e.g. the chain the
evaluation samples); it is resolved here, into ``extra["val_sampling"]``, so a bad name fails before training.
``val_thresholds`` (null or a list of probabilities) is checked here for the same reason.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from isles_diffseg.config.variants import select_variant
from isles_diffseg.inference.predict import sampling_variant
from isles_diffseg.models import architecture_kind, check_image_size

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
# A run name is one folder name under the runs folder and an MLflow tag value: no separators, no
# traversal, no quotes. A leading dot is refused too (".." and hidden folders such as ".latest").
_RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_run_name(name: Any, setting: str = "training.run_name") -> str:
    """``name`` if it is a safe run name, else a ValueError naming ``setting`` and the rule."""
    if not isinstance(name, str):
        raise ValueError(f"{setting} must be a string, got {type(name).__name__} {name!r}")
    if not name.strip():
        raise ValueError(f"{setting} must not be empty")
    if not _RUN_NAME.fullmatch(name):
        raise ValueError(
            f"{setting}={name!r} is not a valid run name: it names one folder, so only letters, digits, '.', '_' "
            "and '-' are allowed, not starting with '.' (no path separators, no '..')"
        )
    return name


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
        """A stored config (e.g. a checkpoint's, on resume); its run name is checked like a given one."""
        config = cls(**copy.deepcopy(dict(d)))
        check_run_name(config.run_name, "the run name stored in the checkpoint")
        return config


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
    recipe = chosen["recipe"] = effective_recipe(recipe, training)
    chosen["model"].update(image_channels=int(image_channels), image_size=int(image_size))
    check_image_size(chosen["model"], int(image_size), model_setting="training.model",
                     hint="the slice store was made at this size: re-run slicing with a size that fits")
    _check_compatible(chosen["model"], chosen["loss"])
    config = RunConfig(
        names={key: training[key] for key in GROUP_OF_KEY},
        **chosen,
        seed=int(training.get("seed", 42)),
        device=str(training.get("device", "auto")),
    )
    val_sampling = validation_sampling(recipe, chosen["diffusion"], config.kind, variants.get("diffusion", {}))
    if val_sampling is not None:
        config.extra["val_sampling"] = val_sampling
    given = training.get("run_name")
    if given is not None and given != "":
        config.run_name = check_run_name(str(given))  # --params turns "123" into an int
    else:
        config.run_name = check_run_name(build_run_name(config, now or datetime.now()), "the run name built from the variants")
    return config


def effective_recipe(recipe: Mapping[str, Any], training: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe a run trains with: a recipe key given under ``training`` (and not null) overrides the variant's."""
    return {**recipe, **{key: value for key, value in training.items()
                         if key in recipe and key not in ("name", "description") and value is not None}}


def validation_sampling(recipe: Mapping[str, Any], diffusion: Mapping[str, Any], kind: str,
                        diffusion_variants: Mapping[str, Mapping[str, Any]], block: str = "training") -> dict | None:
    """Checks the recipe's validation settings; returns the diffusion variant ``val_diffusion`` names over the run's
    process (None: validation samples the run's own variant, or the model samples no chain)."""
    check_val_thresholds(recipe.get("val_thresholds"), f"{block}.val_thresholds")
    if recipe.get("val_diffusion") is None or kind != "diffusion":
        return None
    return sampling_variant(diffusion, diffusion_variants, recipe["val_diffusion"], f"{block}.val_diffusion")


def check_val_thresholds(value: Any, setting: str = "training.val_thresholds") -> None:
    """``val_thresholds``: null (validate at 0.5 only) or probabilities to sweep, each in (0, 1)."""
    if value is None:
        return
    if (not isinstance(value, list | tuple) or not value
            or any(isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 1 for t in value)):
        raise ValueError(f"{setting} must be null or a non-empty list of thresholds in (0, 1), "
                         f"e.g. [0.1, 0.2, ..., 0.9]; got {value!r}")


def _check_compatible(model: Mapping[str, Any], loss: Mapping[str, Any]) -> None:
    """A model and its loss must be of one kind (:mod:`isles_diffseg.models.kinds`): the loss decides how the
    trainer calls the model (``model(image)`` or through the diffusion process)."""
    kind = architecture_kind(model)
    if kind != loss["kind"]:
        raise ValueError(
            f"model {model['name']!r} ({model['architecture']}, a {kind} model) cannot be trained with loss "
            f"{loss['name']!r} (kind {loss['kind']}): unet_baseline needs a discriminative loss (dice_bce), "
            "diffusion denoisers a diffusion loss"
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
