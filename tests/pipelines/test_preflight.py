"""Incompatible settings fail before a run does any work, naming the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tiny_case

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models import IncompatibleImageSizeError
from isles_diffseg.preflight import (
    check_evaluation_sampling,
    check_evaluation_settings,
    check_slicing_settings,
    check_training_validation,
    training_blocks,
)
from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config

CONF = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}


def _params(image_size: int, model: str = "medsegdiff_tiny_cpu", baseline: str = "unet_baseline_tiny_cpu") -> dict:
    return {"slicing": {"image_size": image_size}, "training": {"model": model},
            "unet_baseline": {"training": {"model": baseline}}, "variants": VARIANTS}


def test_every_training_block_is_checked_including_namespaced_ones():
    assert set(training_blocks(_params(64))) == {"training", "unet_baseline.training"}
    check_slicing_settings(_params(64))
    with pytest.raises(IncompatibleImageSizeError, match=r"slicing\.image_size=62 does not suit training\.model="):
        check_slicing_settings(_params(62))
    # the diffusion model takes any size here (no downsampling), the UNet baseline still halves twice
    with pytest.raises(IncompatibleImageSizeError,
                       match=r"slicing\.image_size=62 does not suit unet_baseline\.training\.model='unet_baseline"
                             r"_tiny_cpu'.*or set unet_baseline\.training\.model"):
        check_slicing_settings(_params(62, model="medsegdiff_32_1l_8c_2x2a_128t_1btl_debug"))


def test_training_refuses_a_slice_store_size_the_model_cannot_take():
    training = {"model": "medsegdiff_tiny_cpu", "loss": "mse_with_aux_demo", "optimizer": "adamw_1e3lr_wd1e4",
                "scheduler": "warmup_cosine_10pct", "augmentation": "none", "diffusion": "ddim10",
                "recipe": "train_test_tiny", "run_name": "t"}
    with pytest.raises(IncompatibleImageSizeError, match=r"slicing\.image_size=63 .*re-run slicing"):
        resolve_run_config(training, VARIANTS, image_channels=2, image_size=63)


@pytest.mark.slow
def test_data_processing_with_an_image_size_the_model_cannot_take_stops_before_ingesting(project_copy):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    release = project_copy / "release"
    write_tiny_case(release, 1)
    bootstrap_project(project_copy)
    params = {"data": {"root": str(release)}, "slicing": {"image_size": 63}}
    with (KedroSession.create(project_path=project_copy, runtime_params=params) as session,
          pytest.raises(IncompatibleImageSizeError, match=r"slicing\.image_size=63 does not suit training\.model")):
        session.run(pipeline_names=["data_processing"])  # the hook in settings.HOOKS stops it
    assert not (project_copy / "data/02_intermediate/cases").exists()
    assert not list((project_copy / "data/03_primary").iterdir())


@pytest.mark.parametrize(("setting", "message"), [
    ({"min_component_ml": -1}, r"evaluation\.min_component_ml must be a volume in mL >= 0"),
    ({"scoring_workers": 0}, r"evaluation\.scoring_workers must be auto or an integer >= 1"),
    ({"compile_mode": "fastest"}, r"compile_mode must be one of"),
    ({"fast_path": "yes"}, r"fast_path must be auto, true or false"),
    ({"threshold": {"mode": "best"}}, r"evaluation\.threshold\.mode must be 'fixed' or 'sweep'"),
])
def test_bad_evaluation_settings_are_refused_naming_the_block(setting, message):
    good = {"min_component_ml": 1.0, "scoring_workers": "auto", "fast_path": "auto", "compile_mode": "default",
            "threshold": {"mode": "sweep"}}
    check_evaluation_settings({"evaluation": good, "unet_baseline": {"evaluation": good}})
    with pytest.raises(ValueError, match=message + r".*\(in evaluation; refused before the run starts\)"):
        check_evaluation_settings({"evaluation": {**good, **setting}})
    with pytest.raises(ValueError, match=r"\(in unet_baseline\.evaluation;"):
        check_evaluation_settings({"evaluation": good, "unet_baseline": {"evaluation": {**good, **setting}}})


def test_training_and_evaluation_with_a_bad_evaluation_setting_stop_before_the_first_node(project_copy):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_copy)
    params = {"evaluation": {"min_component_ml": -1}}
    # no slice store exists here: without the check the run would fail loading it, not on the setting
    with (KedroSession.create(project_path=project_copy, runtime_params=params) as session,
          pytest.raises(ValueError, match=r"evaluation\.min_component_ml must be .* refused before the run starts")):
        session.run(pipeline_names=["training", "evaluation"])
    assert not (project_copy / "data/06_models").exists() or not any((project_copy / "data/06_models").iterdir())


def test_an_evaluation_chain_of_another_process_than_the_one_trained_is_refused():
    epsilon = {"loss": "mse_with_aux_light", "diffusion": "ddim50", "run_name": None}
    x0 = {"loss": "mse_x0_aux1_t2", "diffusion": "ddim10_x0_inscale03", "run_name": None}
    evaluation = {"run": None, "diffusion": "trailing1_x0"}
    with pytest.raises(ValueError, match=r"evaluation\.diffusion='trailing1_x0' changes model_output of the trained "
                                         r"process \(epsilon -> x0\).*training\.diffusion='ddim50' \(refused before"):
        check_evaluation_sampling({"training": epsilon, "evaluation": evaluation, "variants": VARIANTS})
    check_evaluation_sampling({"training": x0, "evaluation": evaluation, "variants": VARIANTS})  # inherits the scale
    check_evaluation_sampling({"training": epsilon, "evaluation": {**evaluation, "diffusion": None},
                               "variants": VARIANTS})  # the run's own chain
    check_evaluation_sampling({"training": epsilon, "evaluation": {**evaluation, "run": "an_older_x0_run"},
                               "variants": VARIANTS})  # evaluates another run, checked when it is loaded
    unet = {"loss": "dice_bce", "diffusion": "ddim10", "run_name": None}
    check_evaluation_sampling({"training": epsilon | {"run_name": "r"}, "evaluation": {**evaluation, "run": "x"},
                               "unet_baseline": {"training": unet, "evaluation": evaluation}, "variants": VARIANTS})
    with pytest.raises(ValueError, match=r"unet_baseline\.evaluation\.diffusion=.*unet_baseline\.training\.diffusion"):
        check_evaluation_sampling({"unet_baseline": {"training": epsilon, "evaluation": evaluation},
                                   "variants": VARIANTS})


@pytest.mark.parametrize(("pipelines", "message", "untouched"), [
    # --env isles24 evaluates with the one-step x0 chain: an epsilon run (the handover's ablation) must say so
    # before it trains, not after
    (["training", "evaluation"],
     r"changes model_output .*evaluation\.diffusion=null samples with the run's own variant.*refused before the run",
     "data/06_models"),
    # ... and validates with it: before the data pipelines run, not when training starts after them
    (["data_processing", "training"],
     r"training\.val_diffusion='trailing1_x0' changes model_output .*refused before the run starts",
     "data/05_model_input/slices"),
])
def test_isles24_runs_of_an_epsilon_model_stop_before_the_first_node(project_copy, pipelines, message, untouched):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_copy)
    params = {"training": {"diffusion": "ddim50", "loss": "mse_with_aux_light"}}
    with (KedroSession.create(project_path=project_copy, env="isles24", runtime_params=params) as session,
          pytest.raises(ValueError, match=message)):
        session.run(pipeline_names=pipelines)
    assert not (project_copy / untouched).exists() or not any((project_copy / untouched).iterdir())


def test_the_shipped_epsilon_ablation_space_passes_the_isles24_preflight_because_it_keeps_its_own_chain(project_copy):
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project
    from omegaconf import OmegaConf

    from isles_diffseg.campaign.space import load_space
    from isles_diffseg.config.params_text import params_text

    space = load_space(project_copy / "conf/base/search_spaces/lr_scheduler.yml")
    trial = space.fixed | {key: choices[0] for key, choices in space.categorical_choices().items()}

    def isles24_params(overrides: dict) -> dict:  # what `kedro run --env isles24 --params <trial>` sees
        bootstrap_project(project_copy)
        runtime = OmegaConf.to_container(OmegaConf.from_dotlist(params_text(overrides).split(",")))
        params = settings.CONFIG_LOADER_CLASS(conf_source=str(project_copy / "conf"), env="isles24",
                                              runtime_params=runtime, **settings.CONFIG_LOADER_ARGS)["parameters"]
        return params | {"variants": VARIANTS}  # a session adds them (params:variants) from conf/base/variants

    check_evaluation_sampling(isles24_params(trial))
    check_training_validation(isles24_params(trial))
    with pytest.raises(ValueError, match="changes model_output"):
        check_evaluation_sampling(isles24_params({k: v for k, v in trial.items() if k != "evaluation.diffusion"}))
    with pytest.raises(ValueError, match=r"training\.val_diffusion='trailing1_x0' changes model_output"):
        check_training_validation(isles24_params({k: v for k, v in trial.items() if k != "training.val_diffusion"}))


def test_validation_settings_of_every_trained_run_are_checked_as_training_resolves_them():
    epsilon = {"loss": "mse_with_aux_light", "diffusion": "ddim50", "recipe": "train_test_tiny"}
    x0 = {"loss": "mse_x0_aux1_t2", "diffusion": "ddim10_x0_inscale03", "recipe": "train_test_tiny"}
    unet = {"loss": "dice_bce", "diffusion": "ddim10", "recipe": "train_test_tiny"}
    check_training_validation({"training": x0 | {"val_diffusion": "trailing1_x0", "val_thresholds": [0.5, 0.9]},
                               "unet_baseline": {"training": unet | {"val_diffusion": "trailing1_x0"}},  # no chain
                               "variants": VARIANTS})
    with pytest.raises(ValueError, match=r"training\.val_diffusion='trailing1_x0' changes model_output.*\(training; "
                                         r"refused before the run starts\)"):
        check_training_validation({"training": epsilon | {"val_diffusion": "trailing1_x0"}, "variants": VARIANTS})
    with pytest.raises(ValueError, match=r"val_thresholds must be .*got \[0\.5, 1\.5\] \(unet_baseline\.training"):
        check_training_validation({"unet_baseline": {"training": unet | {"val_thresholds": [0.5, 1.5]}},
                                   "variants": VARIANTS})
    # a recipe's own value counts when the block leaves the key out (train_test_tiny: val_diffusion null)
    recipes = {**VARIANTS["training"], "train_test_tiny": {**VARIANTS["training"]["train_test_tiny"],
                                                             "val_diffusion": "trailing1_x0"}}
    with pytest.raises(ValueError, match="changes model_output"):
        check_training_validation({"training": epsilon, "variants": {**VARIANTS, "training": recipes}})
