"""Settings that cannot work together are refused before a ``kedro run`` does any work.

The slice size must suit every model the parameters name (``training.model`` and a namespaced
``<ns>.training.model``, e.g. the demo's UNet baseline): each model downsamples the image by a fixed
factor, so ``slicing.image_size`` must be a multiple of it. Without this check a size such as 63
passes ingestion and slicing (minutes to hours on the real release) and only fails when training
builds the model. Likewise the evaluation settings are read only after training: a misspelt one, or an
``evaluation.diffusion`` chain of another process than the one being trained (e.g. the isles24 default
``trailing1_x0`` for an epsilon run), is refused before ``kedro run --pipelines training,evaluation`` trains for
hours. And the validation settings a run is resolved with (``training.val_diffusion``, ``val_thresholds``, which
``--env isles24`` sets) are refused before ``data_processing,training`` processes the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline

from isles_diffseg.evaluation.settings import min_component_ml, scoring_workers, threshold_mode
from isles_diffseg.inference.compiled_denoiser import SamplingFastPath
from isles_diffseg.inference.predict import sampling_variant
from isles_diffseg.models import check_image_size
from isles_diffseg.training.run_config import GROUP_OF_KEY, effective_recipe, validation_sampling


def training_blocks(params: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{"training": ..., "<ns>.training": ...}``: every training block the parameters hold."""
    blocks = {}
    if isinstance(params.get("training"), Mapping):
        blocks["training"] = params["training"]
    for namespace, value in params.items():
        if isinstance(value, Mapping) and isinstance(value.get("training"), Mapping) and namespace != "variants":
            blocks[f"{namespace}.training"] = value["training"]
    return blocks


def check_slicing_settings(params: Mapping[str, Any]) -> None:
    """``slicing.image_size`` against the model of every training block (unknown model names are
    left to the variant lookup, which lists the known ones)."""
    image_size = params["slicing"]["image_size"]
    models = params.get("variants", {}).get("model", {})
    for prefix, block in training_blocks(params).items():
        name = block.get("model")
        if name in models:
            check_image_size({**models[name], "name": name}, image_size, model_setting=f"{prefix}.model",
                             hint=f"or set {prefix}.model to the model these slices are for")


def check_evaluation_settings(params: Mapping[str, Any]) -> None:
    """``evaluation`` (and a namespaced ``<ns>.evaluation``): the values the evaluation nodes would refuse."""
    blocks = {"evaluation": params.get("evaluation")} | {
        f"{ns}.evaluation": value["evaluation"] for ns, value in params.items()
        if isinstance(value, Mapping) and isinstance(value.get("evaluation"), Mapping)}
    for prefix, evaluation in blocks.items():
        if not isinstance(evaluation, Mapping):
            continue
        try:
            min_component_ml(evaluation.get("min_component_ml", 0.0))
            scoring_workers(evaluation.get("scoring_workers", "auto"), cases=1)
            SamplingFastPath.from_settings(evaluation, torch.device("cpu"))  # fast_path, compile_mode
            threshold_mode(evaluation)
        except ValueError as error:
            raise ValueError(f"{error} (in {prefix}; refused before the run starts)") from error


def check_evaluation_sampling(params: Mapping[str, Any]) -> None:
    """``evaluation.diffusion`` against the diffusion variant of the run the same ``kedro run`` trains (the
    evaluation of another run, ``evaluation.run``, is checked when it loads that run)."""
    variants = params.get("variants", {})
    for prefix, training in training_blocks(params).items():
        namespace = prefix.removesuffix("training").rstrip(".")
        evaluation = params.get(namespace, {}).get("evaluation") if namespace else params.get("evaluation")
        if not isinstance(evaluation, Mapping) or not evaluation.get("diffusion"):
            continue
        if evaluation.get("run") not in (None, training.get("run_name")):
            continue
        loss = variants.get("loss", {}).get(training.get("loss"), {})
        trained = variants.get("diffusion", {}).get(training.get("diffusion"))
        if loss.get("kind") != "diffusion" or trained is None:
            continue  # a UNet samples no chain; an unknown training variant is answered by training's own lookup
        evaluation_prefix = f"{namespace}.evaluation" if namespace else "evaluation"
        try:  # an unknown evaluation.diffusion name fails here too, listing the known ones
            sampling_variant(trained, variants.get("diffusion", {}), evaluation["diffusion"],
                             f"{evaluation_prefix}.diffusion")
        except ValueError as error:
            raise ValueError(f"{error}; {prefix}.diffusion={training['diffusion']!r} (refused before the run "
                             "starts)") from error


def check_training_validation(params: Mapping[str, Any]) -> None:
    """``val_thresholds`` and ``val_diffusion`` (given under the training block or by its recipe) of every run the
    parameters train, resolved as training resolves them at its start."""
    variants = params.get("variants", {})
    for prefix, training in training_blocks(params).items():
        recipe = variants.get(GROUP_OF_KEY["recipe"], {}).get(training.get("recipe"))
        trained = variants.get("diffusion", {}).get(training.get("diffusion"))
        if recipe is None or trained is None:
            continue  # an unknown variant name is answered by training's own lookup
        kind = variants.get("loss", {}).get(training.get("loss"), {}).get("kind")
        try:
            validation_sampling(effective_recipe(recipe, training), trained, kind, variants.get("diffusion", {}), prefix)
        except ValueError as error:
            raise ValueError(f"{error} ({prefix}; refused before the run starts)") from error


def _trains(pipeline: Pipeline) -> bool:
    return any(i == "params:training" or (i.startswith("params:") and i.endswith(".training"))
               for node in pipeline.nodes for i in node.inputs)


def _slices_in(pipeline: Pipeline) -> bool:
    return any("params:slicing" in node.inputs for node in pipeline.nodes)


def _evaluates(pipeline: Pipeline) -> bool:
    return any(i.startswith("params:") and i.endswith("evaluation") for node in pipeline.nodes for i in node.inputs)


class PreflightHooks:
    """Runs the checks above when a pipeline that slices, trains or evaluates is about to start (before its first
    node)."""

    @hook_impl
    def before_pipeline_run(self, pipeline: Pipeline, catalog: Any) -> None:  # pluggy: a subset of the spec's arguments
        if _slices_in(pipeline):
            check_slicing_settings(catalog.load("parameters"))
        if _evaluates(pipeline):
            check_evaluation_settings(catalog.load("parameters"))
            if _trains(pipeline):
                check_evaluation_sampling(catalog.load("parameters"))
        if _trains(pipeline):
            check_training_validation(catalog.load("parameters"))
