"""`data.strict=true` stopping at a bad case keeps every output of the last good run usable."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import run_kedro, write_tiny_case

from isles_diffseg.data.case_store import CaseStore
from isles_diffseg.data.slice_store import SliceStore

pytestmark = pytest.mark.slow


def test_strict_ingestion_failing_on_a_bad_case_leaves_the_previous_stores_whole(project_copy):
    release = project_copy / "release"
    for n in range(1, 5):
        write_tiny_case(release, n, seed=n)
    params = {"data": {"root": str(release), "n_folds": 2}, "slicing": {"image_size": 32}}
    run_kedro(project_copy, "data_processing", params)
    good = [f"sub-stroke{n:04d}" for n in range(1, 5)]
    cases_dir = project_copy / "data/02_intermediate/cases"
    assert CaseStore(cases_dir).ok_case_ids() == good

    # a new case sorted before the bad one, so the failing run has written cases when it stops
    write_tiny_case(release, 5, seed=5)
    write_tiny_case(release, 6, seed=6)["tmax"].write_bytes(b"")
    with pytest.raises(Exception, match=r"sub-stroke0006: TMAX file is empty"):
        run_kedro(project_copy, "ingestion", {**params, "data": {**params["data"], "strict": True}})

    store = CaseStore(cases_dir)
    assert store.ok_case_ids() == good
    for case_id in good:
        case = store.load(case_id)
        assert case.image.shape[-1] == 2 and case.mask.sum() > 0
    manifest = pd.read_csv(project_copy / "data/03_primary/case_manifest.csv")
    assert sorted(manifest["case_id"]) == good  # manifest and store still describe the same run
    assert SliceStore(project_copy / "data/05_model_input/slices").case_ids == good
    assert sorted(p.name for p in cases_dir.parent.iterdir()) == ["cases"]  # no staging folder left
