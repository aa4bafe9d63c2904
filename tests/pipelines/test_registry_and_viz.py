"""The registered pipelines, the variant parameters and kedro-viz rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isles_diffseg.pipeline_registry import register_pipelines

PIPELINES = {"synthetic", "ingestion", "slicing", "splits", "data_processing", "training", "evaluation", "cross_validation",
             "nnunet_export",
             "__default__"}


def test_pipeline_names_are_the_documented_interface():
    assert set(register_pipelines()) >= PIPELINES


def test_default_chain_reads_the_synthetic_release_it_wrote():
    default = register_pipelines()["__default__"]
    assert "isles24_raw" not in default.all_inputs()
    assert "isles24_synthetic" in default.all_outputs()
    assert {"slice_store", "case_folds", "case_manifest"} <= default.all_outputs()


def test_every_dataset_of_the_default_chain_has_a_viz_layer():
    from kedro.io import CatalogConfigResolver

    from isles_diffseg import settings

    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(Path(__file__).parents[2] / "conf"),
                                          **settings.CONFIG_LOADER_ARGS)
    resolver = CatalogConfigResolver(loader["catalog"])
    datasets = {d for d in register_pipelines()["__default__"].datasets() if not d.startswith("params:")}
    for name in datasets:  # an explicit entry or a dataset factory match, never an implicit MemoryDataset
        config = resolver.config.get(name) or resolver.resolve_pattern(name)
        assert config and config.get("type") != "kedro.io.MemoryDataset", f"{name} is not a catalog entry"
        assert config["metadata"]["kedro-viz"]["layer"], name


@pytest.mark.slow
def test_kedro_viz_build_renders_every_pipeline(project_copy):
    # `kedro viz build` exits 0 even when it fails, so the JSON it writes is what we check.
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    kedro = Path(sys.executable).with_name("kedro")
    result = subprocess.run([str(kedro), "viz", "build"], cwd=project_copy, env=env, capture_output=True,
                            text=True, timeout=300)
    main = project_copy / "build" / "api" / "main"
    assert main.is_file(), result.stdout + result.stderr
    payload = json.loads(main.read_text())
    assert {p["id"] for p in payload["pipelines"]} >= PIPELINES
    tasks = {n["name"] for n in payload["nodes"] if n["type"] == "task"}
    assert {"ingest_cases", "build_slice_store", "make_case_folds", "generate_synthetic_dataset"} <= tasks
    for pipeline_id in PIPELINES:
        rendered = json.loads((project_copy / "build" / "api" / "pipelines" / pipeline_id).read_text())
        assert any(n["type"] == "task" for n in rendered["nodes"]), pipeline_id
