"""Named variants: one YAML per variant, picked by name, visible as Kedro parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from isles_diffseg.config.variants import UnknownVariantError, load_variant_group, select_variant

CONF = Path(__file__).parents[2] / "conf" / "base"


def test_a_variant_file_is_keyed_by_its_own_name(tmp_path):
    folder = tmp_path / "variants" / "optimizer"
    folder.mkdir(parents=True)
    (folder / "adamw_test.yml").write_text("adamw_test:\n  lr: 0.001\n")
    assert load_variant_group("optimizer", tmp_path) == {"adamw_test": {"lr": 0.001}}
    (folder / "wrong.yml").write_text("other_name:\n  lr: 1\n")
    with pytest.raises(ValueError, match=r"wrong.yml: a variant file must hold exactly one top-level key"):
        load_variant_group("optimizer", tmp_path)


def test_unknown_names_list_the_known_ones():
    variants = {"b": {}, "a": {}}
    with pytest.raises(UnknownVariantError, match=r"Unknown model variant 'c'. Known model variants: a, b"):
        select_variant(variants, "c", "model")


def test_selected_variant_is_a_copy_that_records_its_name():
    variants = {"v": {"depth": {"levels": 3}}}
    chosen = select_variant(variants, "v", "model")
    chosen["depth"]["levels"] = 9
    assert variants["v"]["depth"]["levels"] == 3 and chosen["name"] == "v"


def test_kedro_parameters_expose_every_variant_group(project_copy):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy) as session:
        catalog = session.load_context().catalog
        models = catalog.load("params:variants.model")
    assert models == load_variant_group("model", CONF)
    assert "medsegdiff_256_4l_16c_6x4a_128t_1btl_large" in models


def test_isles24_environment_trains_the_x0_recipe_the_learning_benchmark_measured(project_copy):
    """`kedro run --env isles24` must train what benchmarks/learning measured: x0 prediction, flat
    Dice/BCE auxiliaries, zero-initialised output; and the benchmark driver must resolve it the same way."""
    import sys

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config

    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env="isles24") as session:
        catalog = session.load_context().catalog
        training = catalog.load("params:training")
        evaluation = catalog.load("params:evaluation")
        variants = {group: catalog.load(f"params:variants.{group}") for group in set(GROUP_OF_KEY.values())}
    config = resolve_run_config(training, variants, image_channels=2, image_size=256)
    assert (config.diffusion["model_output"], config.diffusion["input_scale"]) == ("x0", 0.3)
    # scored as rounds 12-13 scored it: the one-step chain, 5 members, the swept threshold, the base's other keys
    assert (evaluation["diffusion"], evaluation["members"], evaluation["threshold"]["mode"]) == (
        "trailing1_x0", 5, "sweep")
    assert (config.loss["dice_weight"], config.loss["bce_weight"], config.loss["noise_weighting"]) == (1.0, 1.0, "none")
    assert config.loss["timestep_power"] == 2.0 and config.optimizer["lr"] == 5e-4
    assert config.model["init"] == "zero_out" and config.model["first_conv_channels"] == 16

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks" / "learning"))
    try:
        from driver import training_block
    finally:
        sys.path.pop(0)
    # the driver builds no run folder (it trains into its own work folder), so output_dir is not compared
    driver_block = training_block("isles24", "training", {})
    assert {k: v for k, v in driver_block.items() if k != "output_dir"} == {k: v for k, v in training.items()
                                                                            if k != "output_dir"}
