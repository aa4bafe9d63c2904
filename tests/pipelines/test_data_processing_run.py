"""`kedro run --pipelines data_processing` on a tiny dataset, through a real KedroSession."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import run_kedro, write_tiny_case

from isles_diffseg.data.slice_store import SliceStore

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_release(project_copy):
    root = project_copy / "release"
    for n in range(1, 8):
        write_tiny_case(root, n, seed=n)
    broken = write_tiny_case(root, 8)
    broken["tmax"].write_bytes(b"")  # an empty file: skipped, with its reason in the manifest
    return root


def test_data_processing_writes_manifest_slice_store_and_folds(project_copy, tiny_release):
    run_kedro(project_copy, "data_processing",
              {"data": {"root": str(tiny_release), "n_folds": 3}, "slicing": {"image_size": 32, "context_slices": 1}})

    manifest = pd.read_csv(project_copy / "data/03_primary/case_manifest.csv")
    assert len(manifest) == 8
    skipped = manifest.set_index("case_id").loc["sub-stroke0008"]
    assert skipped["status"] == "failed" and "TMAX file is empty" in skipped["error"]
    assert "sub-stroke0008_ses-01_space-ncct_tmax.nii.gz" in skipped["error_path"]

    store = SliceStore(project_copy / "data/05_model_input/slices")
    assert store.case_ids == [f"sub-stroke{n:04d}" for n in range(1, 8)]
    assert store.image_channels == 2 * 3  # CBF + Tmax, 2.5D context of one slice on each side
    assert store.images([0, 1]).shape == (2, 6, 32, 32)
    assert len(store) == 7 * 6 and set(store.index.columns) >= {"case_id", "slice", "lesion_pixels", "train_keep"}

    folds = pd.read_csv(project_copy / "data/05_model_input/case_folds.csv")
    assert sorted(folds["case_id"]) == store.case_ids and set(folds["fold"]) == {0, 1, 2}
    assert "role" not in folds  # roles are chosen by data.fold when training/evaluation run


def test_strict_mode_stops_at_the_first_bad_case(project_copy, tiny_release):
    with pytest.raises(Exception, match=r"sub-stroke0008: TMAX file is empty"):
        run_kedro(project_copy, "ingestion", {"data": {"root": str(tiny_release), "strict": True}})
