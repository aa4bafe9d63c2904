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
