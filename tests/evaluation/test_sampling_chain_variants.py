"""The trailing-chain diffusion variants change only how an x0 run is sampled, and evaluation.diffusion picks them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import project_parameters

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.diffusion import space_timesteps
from isles_diffseg.evaluation.settings import resolve_setup
from isles_diffseg.evaluation.trained_model import TrainedModel
from isles_diffseg.inference import build_diffusion
from isles_diffseg.models import build_model
from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
SAMPLING_KEYS = {"description", "token", "respacing"}


@pytest.mark.parametrize(("name", "first_model_step", "steps"), [("trailing10_x0", 999, 10), ("trailing1_x0", 999, 1)])
def test_trailing_variants_are_the_recipe_process_with_another_chain(name, first_model_step, steps):
    variants = load_variant_group("diffusion", CONF)
    recipe, trailing = variants["ddim10_x0"], variants[name]
    assert {k: v for k, v in trailing.items() if k not in SAMPLING_KEYS} == {
        k: v for k, v in recipe.items() if k not in SAMPLING_KEYS}
    kept = space_timesteps(trailing["num_timesteps"], trailing["respacing"])
    assert (len(kept), kept[-1]) == (steps, first_model_step)
    assert space_timesteps(recipe["num_timesteps"], recipe["respacing"])[-1] == 900


def test_evaluation_diffusion_samples_an_x0_run_with_the_trailing_chain(project_copy):
    variants = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}
    config = resolve_run_config({"model": "medsegdiff_tiny_cpu", "loss": "mse_x0_aux1_t2",
                                 "optimizer": "adamw_5e4lr_wd00", "scheduler": "constant", "augmentation": "none",
                                 "diffusion": "ddim10_x0", "recipe": "train_test_tiny", "run_name": "t"},
                                variants, image_channels=2, image_size=32)
    model = build_model(config.model, image_size=32, image_channels=2)
    trained = TrainedModel("t", model, config, Path("none"), 0, ["cbf", "tmax"], 0, 32)
    cpu = torch.device("cpu")
    assert resolve_setup({"diffusion": None}, trained, variants, cpu).sampler.respacing == "ddim10"
    setup = resolve_setup({"diffusion": "trailing1_x0"}, trained, variants, cpu)
    assert (setup.sampler.respacing, setup.diffusion_name) == ("trailing1", "trailing1_x0")

    def chosen(runtime_params: dict | None = None) -> str:  # merged as `kedro run` merges the project's config
        evaluation = project_parameters(project_copy, runtime_params)["evaluation"]
        return resolve_setup(evaluation, trained, variants, cpu).sampler.respacing

    assert chosen() == "ddim10"  # conf/base: the run's own chain
    assert chosen({"evaluation": {"diffusion": "trailing10_x0"}}) == "trailing10"  # --params
    (project_copy / "conf/local/parameters_evaluation.yml").write_text(
        yaml.safe_dump({"evaluation": {"diffusion": "trailing1_x0"}}))
    assert chosen() == "trailing1"  # conf/local
    assert chosen({"evaluation": {"diffusion": "trailing10_x0"}}) == "trailing10"  # --params wins


def _trained_run(variants: dict, diffusion: str) -> TrainedModel:
    config = resolve_run_config({"model": "medsegdiff_tiny_cpu", "loss": "mse_x0_aux1_t2",
                                 "optimizer": "adamw_5e4lr_wd00", "scheduler": "constant", "augmentation": "none",
                                 "diffusion": diffusion, "recipe": "train_test_tiny", "run_name": "t"},
                                variants, image_channels=2, image_size=32)
    return TrainedModel("t", build_model(config.model, image_size=32, image_channels=2), config, Path("none"), 0,
                        ["cbf", "tmax"], 0, 32)


def test_input_scaled_runs_train_and_sample_their_own_process_whatever_chain_evaluation_picks(project_copy):
    variants = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}
    cpu, t = torch.device("cpu"), torch.tensor([0, 500, 900])
    plain = build_diffusion(variants["diffusion"]["ddim10_x0"])

    # --params training.diffusion=... picks the variant; the process built from the run config (as the Trainer
    # builds it) has SNR x 0.3^2
    training = project_parameters(project_copy, {"training": {"diffusion": "ddim10_x0_inscale03"}})["training"]
    trained = _trained_run(variants, training["diffusion"])
    torch.testing.assert_close(build_diffusion(trained.config.diffusion).snr(t, torch.float64),
                               0.09 * plain.snr(t, torch.float64), rtol=1e-9, atol=0)
    # a sampling variant that says nothing about input scaling samples the trained process with its own chain
    setup = resolve_setup({"diffusion": "trailing1_x0"}, trained, variants, cpu)
    assert setup.sampler.respacing == "trailing1"
    torch.testing.assert_close(setup.diffusion.alphas_cumprod, build_diffusion(trained.config.diffusion).alphas_cumprod)
    # one that states another scale would sample a process the model was not trained on
    variants["diffusion"]["trailing1_x0"]["input_scale"] = 1.0
    with pytest.raises(ValueError, match="changes input_scale"):
        resolve_setup({"diffusion": "trailing1_x0"}, trained, variants, cpu)


def test_a_diffusion_variant_key_nobody_reads_is_an_error():
    variant = {**load_variant_group("diffusion", CONF)["ddim10_x0"], "input_scal": 0.3}
    with pytest.raises(ValueError, match=r"unknown keys \['input_scal'\]"):
        build_diffusion(variant)


def test_the_input_scale_and_the_validation_chain_take_effect_from_params_and_conf_local(project_copy):
    variants = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}

    def resolved(runtime_params: dict | None = None) -> tuple[float, str]:  # as `kedro run` merges the config
        training = project_parameters(project_copy, runtime_params)["training"]
        config = resolve_run_config({**training, "run_name": "t"}, variants, image_channels=2, image_size=32)
        validation = config.extra.get("val_sampling") or config.diffusion
        return config.diffusion.get("input_scale", 1.0), validation["respacing"]

    assert resolved() == (1.0, "ddim10")  # conf/base: the demo's process, validated with its own chain
    assert resolved({"training": {"diffusion": "ddim10_x0_inscale01", "val_diffusion": "trailing10_x0"}}) == (
        0.1, "trailing10")  # --params
    (project_copy / "conf/local/parameters_training.yml").write_text(yaml.safe_dump(
        {"training": {"diffusion": "ddim10_x0_inscale03", "val_diffusion": "trailing1_x0"}}))
    assert resolved() == (0.3, "trailing1")  # conf/local
    assert resolved({"training": {"val_diffusion": None}}) == (0.3, "ddim10")  # --params wins: the run's own chain


def test_the_validation_sweep_and_members_take_effect_from_the_isles24_env_params_and_conf_local(project_copy):
    variants = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}

    def validation(runtime_params: dict | None = None, env: str | None = None, section: str = "training"):
        params = project_parameters(project_copy, runtime_params, env)
        training = params["unet_baseline"]["training"] if section == "unet" else params["training"]
        config = resolve_run_config({**training, "run_name": "t"}, variants, image_channels=2, image_size=256)
        chain = (config.extra.get("val_sampling") or config.diffusion).get("respacing")
        return chain, config.recipe["val_members"], config.recipe["val_thresholds"]

    grid = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert validation() == ("ddim10", 1, None)  # conf/base: the demo validates as before
    assert validation(env="isles24") == ("trailing1", 5, grid)  # as the isles24 evaluation scores
    assert validation(env="isles24", section="unet")[1:] == (1, grid)  # a UNet samples no chain
    # an epsilon run under isles24 (the handover's commands) takes the run's own chain and one member back
    epsilon = {"training": {"diffusion": "ddim50", "loss": "mse_with_aux_light", "val_diffusion": None,
                            "val_members": 1}}
    assert validation(epsilon, env="isles24") == ("ddim50", 1, grid)
    assert validation({"training": {"val_thresholds": [0.5, 0.9]}}) == ("ddim10", 1, [0.5, 0.9])  # --params
    (project_copy / "conf/local/parameters_training.yml").write_text(yaml.safe_dump(
        {"training": {"val_thresholds": [0.4, 0.6], "val_members": 3}}))
    assert validation() == ("ddim10", 3, [0.4, 0.6])  # conf/local
