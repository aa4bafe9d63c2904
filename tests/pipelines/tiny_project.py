"""A tiny processed project (ingested, sliced, folds numbered), shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

from conftest import run_kedro, write_tiny_case

DATA = {"n_folds": 3, "seed": 1}


def process_tiny_release(project: Path, n_cases: int = 7) -> Path:
    """Tiny cases in three folds at 32 px, after `kedro run --pipelines data_processing`."""
    root = project / "release"
    for n in range(1, n_cases + 1):
        write_tiny_case(root, n, seed=n)
    run_kedro(project, "data_processing", {"data": {**DATA, "root": str(root)}, "slicing": {"image_size": 32}})
    return project
