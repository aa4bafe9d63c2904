"""`data.root` is one setting: wherever it is set, the catalog's `isles24_raw` reads that folder."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import write_tiny_case

pytestmark = pytest.mark.slow


def run_ingestion(project: Path, runtime_params: dict | None = None, env: str | None = None) -> pd.DataFrame:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params or {}) as session:
            session.run(pipeline_names=["ingestion"])
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    return pd.read_csv(project / "data/03_primary/case_manifest.csv")


@pytest.fixture
def releases(project_copy) -> dict[str, Path]:
    """Three releases with disjoint case numbers, so the manifest shows which one was read."""
    roots = {}
    for name, numbers in {"params": (1, 2), "local": (3, 4), "env": (5, 6)}.items():
        roots[name] = project_copy / f"release_{name}"
        for n in numbers:
            write_tiny_case(roots[name], n, seed=n)
    return roots


def write_params(path: Path, root: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"data": {"root": str(root)}}))


def cases_and_source(manifest: pd.DataFrame) -> tuple[list[str], set[str]]:
    return sorted(manifest["case_id"]), set(manifest["source_root"])


def test_data_root_from_params_local_file_and_environment(project_copy, releases):
    # --params
    manifest = run_ingestion(project_copy, {"data": {"root": str(releases["params"])}})
    assert cases_and_source(manifest) == (["sub-stroke0001", "sub-stroke0002"], {str(releases["params"])})

    # conf/local/parameters_data.yml, as the README recommends for the real release
    write_params(project_copy / "conf/local/parameters_data.yml", releases["local"])
    manifest = run_ingestion(project_copy)
    assert cases_and_source(manifest) == (["sub-stroke0003", "sub-stroke0004"], {str(releases["local"])})

    # --params still wins over the local file (Kedro's order: base < env < --params)
    manifest = run_ingestion(project_copy, {"data": {"root": str(releases["params"])}})
    assert cases_and_source(manifest)[1] == {str(releases["params"])}

    # a run environment's parameters (--env mysite)
    (project_copy / "conf/local/parameters_data.yml").unlink()
    write_params(project_copy / "conf/mysite/parameters_data.yml", releases["env"])
    manifest = run_ingestion(project_copy, env="mysite")
    assert cases_and_source(manifest) == (["sub-stroke0005", "sub-stroke0006"], {str(releases["env"])})


def test_isles24_environment_reads_its_dataset_root_global(project_copy, releases):
    # conf/isles24/globals.yml names the release folder; data.root follows it unless overridden.
    globals_file = project_copy / "conf/isles24/globals.yml"
    settings = yaml.safe_load(globals_file.read_text())
    globals_file.write_text(yaml.safe_dump({**settings, "dataset_root": str(releases["env"])}))
    manifest = run_ingestion(project_copy, env="isles24")
    assert cases_and_source(manifest) == (["sub-stroke0005", "sub-stroke0006"], {str(releases["env"])})


def test_catalog_and_parameters_agree_on_the_root(project_copy, releases):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    write_params(project_copy / "conf/local/parameters_data.yml", releases["local"])
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy) as session:
        context = session.load_context()
        assert context.params["data"]["root"] == str(releases["local"])
        assert context.catalog["isles24_raw"].load().path == releases["local"]
    while mlflow.active_run():
        mlflow.end_run()
