"""A failed run never destroys the last good output: stores are replaced only once complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_slice_store, write_tiny_case

from isles_diffseg.data.case_store import CaseStore, write_case_store
from isles_diffseg.data.case_volume import preprocess_case
from isles_diffseg.data.discovery import discover_cases
from isles_diffseg.data.folder_swap import replacing_folder, staging_path, swap_in
from isles_diffseg.data.nifti_io import CaseInputError
from isles_diffseg.data.slice_store import CaseSlices, SliceStore, SliceStoreWriter
from isles_diffseg.data.slicing import SliceGeometry
from isles_diffseg.data.synthetic import SyntheticProfile
from isles_diffseg.pipelines.synthetic.nodes import SyntheticDatasetWriter

BASELINE = {"cbf": [0, 70], "tmax": [4, 30]}


def _jobs(release: Path) -> dict:
    return {files.case_id: (lambda files=files: preprocess_case(files, ["cbf", "tmax"], BASELINE))
            for files in discover_cases(release)}


def _good_store(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    release = tmp_path / "release"
    for number in range(1, n + 1):
        write_tiny_case(release, number, seed=number)
    root = tmp_path / "cases"
    write_case_store(root, _jobs(release))
    return release, root


def test_a_failing_case_leaves_the_previous_case_store_whole(tmp_path):
    release, root = _good_store(tmp_path)
    before = {c: CaseStore(root).load(c) for c in CaseStore(root).ok_case_ids()}
    write_tiny_case(release, 4, seed=4)["tmax"].write_bytes(b"")
    write_tiny_case(release, 5, seed=5)

    # preprocess_case raises, as the ingestion job does with data.strict=true
    with pytest.raises(CaseInputError, match="TMAX file is empty"):
        write_case_store(root, _jobs(release))

    store = CaseStore(root)
    assert store.ok_case_ids() == ["sub-stroke0001", "sub-stroke0002", "sub-stroke0003"]
    for case_id, case in before.items():
        again = store.load(case_id)
        np.testing.assert_array_equal(again.image, case.image)
        np.testing.assert_array_equal(again.mask, case.mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases", "release"]  # no staging folder left


def test_a_complete_write_replaces_the_store_and_drops_stale_cases(tmp_path):
    release, root = _good_store(tmp_path)
    jobs = _jobs(release)
    write_case_store(root, {"sub-stroke0002": jobs["sub-stroke0002"]})
    assert CaseStore(root).ok_case_ids() == ["sub-stroke0002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases", "release"]


def test_ctrl_c_part_way_leaves_the_previous_case_store_whole(tmp_path):
    release, root = _good_store(tmp_path, n=2)
    jobs = _jobs(release)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_case_store(root, {"sub-stroke0001": jobs["sub-stroke0001"], "sub-stroke0002": interrupted})
    assert CaseStore(root).ok_case_ids() == ["sub-stroke0001", "sub-stroke0002"]
    assert not staging_path(root).exists()


def _one_case(case_id: str, value: float, size: int = 8, slices: int = 2) -> CaseSlices:
    images = np.full((slices, 2, size, size), value, np.float32)
    masks = np.zeros((slices, size, size), np.uint8)
    return CaseSlices(case_id, images, masks, np.ones_like(masks), SliceGeometry.plan((size, size, slices), size))


def _writer(path: Path, n_slices: int) -> SliceStoreWriter:
    return SliceStoreWriter(path, n_slices=n_slices, channels=2, image_size=8,
                            meta={"modalities": ["cbf", "tmax"], "context_slices": 0})


def test_a_discarded_slice_store_write_leaves_the_previous_store_readable(tmp_path):
    path = tmp_path / "slices"
    old, _ = build_tiny_slice_store(path, n_cases=3, n_slices=2, size=12)
    old_images = old.images(np.arange(len(old)))
    writer = _writer(path, n_slices=4)
    writer.add(_one_case("sub-stroke0009", 0.5))
    assert SliceStore(path).case_ids == old.case_ids  # mid-write, readers still see the old store
    writer.discard()
    store = SliceStore(path)
    assert store.case_ids == ["sub-stroke0001", "sub-stroke0002", "sub-stroke0003"]
    np.testing.assert_array_equal(store.images(np.arange(len(store))), old_images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slices"]


def test_a_crashed_slice_store_write_is_cleared_by_the_next_one(tmp_path):
    path = tmp_path / "slices"
    build_tiny_slice_store(path, n_cases=2, n_slices=2, size=12)
    crashed = _writer(path, n_slices=2)  # the process dies here: no close, no discard
    crashed.add(_one_case("sub-stroke0009", 0.5))
    assert SliceStore(path).case_ids == ["sub-stroke0001", "sub-stroke0002"]
    writer = _writer(path, n_slices=2)
    writer.add(_one_case("sub-stroke0007", 0.25))
    store = writer.close()
    assert store.case_ids == ["sub-stroke0007"] and float(store.images([0]).max()) == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slices"]


def test_an_incomplete_slice_store_is_never_swapped_in(tmp_path):
    path = tmp_path / "slices"
    build_tiny_slice_store(path, n_cases=2, n_slices=2, size=12)
    writer = _writer(path, n_slices=4)
    writer.add(_one_case("sub-stroke0009", 0.5))
    with pytest.raises(ValueError, match="store expected 4 slices, got 2"):
        writer.close()
    assert SliceStore(path).case_ids == ["sub-stroke0001", "sub-stroke0002"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = staging_path(target)
    staging.mkdir()
    real_rename = Path.rename

    def failing_second_rename(self, to):
        if self == staging:
            raise OSError("device busy")
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", failing_second_rename)
    with pytest.raises(OSError, match="device busy"):
        swap_in(staging, target)
    assert (target / "old.txt").read_text() == "old"


def test_replacing_folder_swaps_only_when_the_block_completes(tmp_path):
    target = tmp_path / "store"
    with replacing_folder(target) as staging:
        (staging / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError), replacing_folder(target) as staging:
        (staging / "b").write_text("2")
        raise RuntimeError
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


TINY_RELEASE = SyntheticProfile(n_cases=2, shape_x=48, shape_y=(56, 56), n_slices=(12, 12), spacing_xy_mm=(4.0, 4.0),
                                slice_mm=(10.0, 10.0))


def test_a_failed_synthetic_generation_leaves_the_previous_release_whole(tmp_path, monkeypatch):
    import isles_diffseg.data.synthetic as synthetic

    root = tmp_path / "isles24_synthetic"
    SyntheticDatasetWriter({"profile": TINY_RELEASE, "seed": 1, "n_cases": 2}).write_to(root)
    before = {f.case_id: f.mask.read_bytes() for f in discover_cases(root)}
    real_generate = synthetic.generate_case

    def fails_on_the_second_case(index, *args, **kwargs):
        if index == 1:
            raise RuntimeError("generator crashed")
        return real_generate(index, *args, **kwargs)

    monkeypatch.setattr(synthetic, "generate_case", fails_on_the_second_case)
    with pytest.raises(RuntimeError, match="generator crashed"):
        SyntheticDatasetWriter({"profile": TINY_RELEASE, "seed": 2, "n_cases": 3}).write_to(root)
    assert {f.case_id: f.mask.read_bytes() for f in discover_cases(root)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isles24_synthetic"]

    monkeypatch.setattr(synthetic, "generate_case", real_generate)
    SyntheticDatasetWriter({"profile": TINY_RELEASE, "seed": 2, "n_cases": 3}).write_to(root)
    assert [f.case_id for f in discover_cases(root)] == ["sub-stroke0001", "sub-stroke0002", "sub-stroke0003"]
