"""Case discovery across the naming variants of the ISLES'24 releases."""

from __future__ import annotations

import logging

import pytest

from isles_diffseg.data.discovery import canonical_case_id, discover_cases


def test_v7_layout_finds_every_modality_and_the_ncct_space_mask(tmp_path, write_case):
    paths = write_case(tmp_path, 1)
    (case,) = discover_cases(tmp_path)
    assert case.case_id == "sub-stroke0001"
    for modality in ("cbf", "tmax", "cbv", "mtt", "ncct"):
        assert case.modalities[modality] == paths[modality]
    assert case.modalities["cta"] is None
    assert case.mask == paths["mask"]


@pytest.mark.parametrize(
    "variant",
    [
        {"ext": ".nii"},
        {"mask_label": "lesion-msk"},  # older releases: no space-ncct in the mask name
        {"case_prefix": "sub-strokecase", "raw_dir": "rawdata", "ses": ("ses-0001", "ses-0002")},
    ],
    ids=["uncompressed", "mask-without-space-ncct", "readme-spelling"],
)
def test_naming_variants_are_found(tmp_path, write_case, variant):
    paths = write_case(tmp_path, 7, **variant)
    (case,) = discover_cases(tmp_path)
    assert case.case_id == "sub-stroke0007"
    assert case.mask == paths["mask"]
    assert case.modalities["cbf"] == paths["cbf"]
    assert case.modalities["ncct"] == paths["ncct"]


def test_stray_native_mask_next_to_the_real_one_is_ignored_and_logged(tmp_path, write_case, caplog):
    # Case 0142 of the real release ships an extra uncompressed native-space mask.
    paths = write_case(tmp_path, 142)
    stray = paths["mask"].parent / "sub-stroke0142_ses-02_lesion-msk.nii"
    stray.write_bytes(paths["mask"].read_bytes())
    with caplog.at_level(logging.INFO):
        (case,) = discover_cases(tmp_path)
    assert case.mask == paths["mask"]
    assert any("lesion-msk.nii" in n for n in case.notes)
    assert "using sub-stroke0142_ses-02_space-ncct_lesion-msk.nii.gz" in caplog.text


def test_cases_are_sorted_by_number_and_the_choice_is_deterministic(tmp_path, write_case):
    for n in (12, 3, 101):
        write_case(tmp_path, n)
    ids = [c.case_id for c in discover_cases(tmp_path)]
    assert ids == ["sub-stroke0003", "sub-stroke0012", "sub-stroke0101"]
    assert ids == [c.case_id for c in discover_cases(tmp_path)]


def test_a_folder_without_cases_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no case folders"):
        discover_cases(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_cases(tmp_path / "missing")


def test_canonical_case_id():
    assert canonical_case_id("sub-strokecase0042") == "sub-stroke0042"
    assert canonical_case_id("sub-stroke7") == "sub-stroke0007"
    assert canonical_case_id("derivatives") is None
