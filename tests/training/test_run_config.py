"""Run names name a folder under the runs folder: a given name can never point anywhere else."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from conftest import build_tiny_slice_store

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.training.launch import prepare_run
from isles_diffseg.training.run_config import GROUP_OF_KEY, RunConfig, check_run_name, resolve_run_config

CONF = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}
BASE = {"model": "medsegdiff_tiny_cpu", "loss": "mse_with_aux_demo", "optimizer": "adamw_1e3lr_wd1e4",
        "scheduler": "warmup_cosine_10pct", "augmentation": "light_2d", "diffusion": "ddim10",
        "recipe": "train_test_tiny"}


def _resolve(**training):
    return resolve_run_config({**BASE, **training}, VARIANTS, image_channels=2, image_size=32,
                              now=datetime(2026, 12, 1, 9, 30, 0))


@pytest.mark.parametrize("name", ["../../../x", "..", ".", "a/../../b", "/tmp/x", "runs/x", "a\\b", "..\\x",
                                  "~/x", ".latest", "x y", "x'y", "x\n", "café"])
def test_traversal_separators_and_odd_characters_are_refused_naming_the_setting(name):
    with pytest.raises(ValueError, match=r"training\.run_name=.* is not a valid run name"):
        _resolve(run_name=name)


def test_a_traversing_run_name_is_refused_when_the_training_node_prepares_the_run(tmp_path):
    # prepare_run is what the training node and the torchrun entry call before the trainer makes folders
    store, _ = build_tiny_slice_store(tmp_path / "slices")
    training = {**BASE, "run_name": "../../../x", "output_dir": str(tmp_path / "runs")}
    with pytest.raises(ValueError, match=r"training\.run_name='../../../x' is not a valid run name"):
        prepare_run(store, training, VARIANTS)


@pytest.mark.parametrize("name", ["   ", "\t"])
def test_blank_names_are_refused(name):
    with pytest.raises(ValueError, match=r"training\.run_name must not be empty"):
        _resolve(run_name=name)


@pytest.mark.parametrize("name", ["tiny_diffusion", "run-2026.12.01", "A1", "x0_fold-3.v2"])
def test_letters_digits_dot_underscore_and_dash_are_accepted(name):
    assert _resolve(run_name=name).run_name == name


def test_a_numeric_name_from_the_command_line_is_a_name():
    # `--params training.run_name=123` arrives as the int 123
    assert _resolve(run_name=123).run_name == "123"


def test_without_a_given_name_the_built_name_is_used_and_is_valid():
    name = _resolve().run_name
    assert name.startswith("medsegdiff_tiny_cpu_b") and name.endswith("_oai_ddim_ds1000_nzcosine_tr10_2026-12-01_09-30-00")
    assert check_run_name(name) == name


def test_a_stored_config_with_a_traversing_run_name_is_refused():
    stored = _resolve(run_name="ok").to_dict()
    stored["run_name"] = "../../elsewhere"
    with pytest.raises(ValueError, match=r"the run name stored in the checkpoint='../../elsewhere' is not a valid"):
        RunConfig.from_dict(stored)
    assert RunConfig.from_dict({**stored, "run_name": "ok"}).run_name == "ok"


def test_the_setting_named_in_the_error_is_the_one_checked():
    with pytest.raises(ValueError, match=r"evaluation\.run='a/b'"):
        check_run_name("a/b", "evaluation.run")
    with pytest.raises(ValueError, match=r"training\.run_name must be a string"):
        check_run_name(None)
