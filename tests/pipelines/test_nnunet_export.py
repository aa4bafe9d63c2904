"""`kedro run --pipelines nnunet_export` writes an nnU-Net v2 raw dataset whose splits are our folds.

The layout asserted is nnU-Net v2's documented dataset format (documentation/dataset_format.md:
imagesTr/{CASE}_{XXXX}.nii.gz per channel, labelsTr/{CASE}.nii.gz, dataset.json with channel_names, labels,
numTraining, file_ending; splits_final.json a list of {"train", "val"} per fold); where nnunetv2 is installed
(the optional extra `nnunet`), its own verify_dataset_integrity checks the folder too, and a prediction written
by nnU-Net's own image writer is scored by evaluation.predictions.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import run_kedro
from tiny_project import DATA, process_tiny_release

from isles_diffseg.datasets.nnunet_raw_dataset import dataset_folder_name

pytestmark = pytest.mark.slow
MODALITIES = ["cbf", "tmax"]  # data.modalities of conf/base


@pytest.fixture
def exported(project_copy):
    project = process_tiny_release(project_copy)
    root = project / "nnunet_raw"
    run_kedro(project, "nnunet_export", {"data": DATA, "nnunet": {"root": str(root), "dataset_id": 7,
                                                                  "dataset_name": "Tiny"}})
    return project, root / "Dataset007_Tiny"


def test_layout_dataset_json_and_images_on_the_native_grid(exported):
    project, folder = exported
    folds = pd.read_csv(project / "data/05_model_input/case_folds.csv")
    cases = sorted(folds["case_id"])
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "imagesTr", "labelsTr", "splits_final.json"]
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(
        f"{c}_{i:04d}.nii.gz" for c in cases for i in range(len(MODALITIES)))
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in cases]
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "cbf", "1": "tmax"}
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    assert (dataset["numTraining"], dataset["file_ending"]) == (len(cases), ".nii.gz")

    for case_id in cases:
        meta = json.loads((project / f"data/02_intermediate/cases/{case_id}/meta.json").read_text())
        source = nib.load(meta["mask_file"])
        label = nib.load(folder / "labelsTr" / f"{case_id}.nii.gz")
        # the native grid of the release's own files, so nnU-Net's predictions land on it
        np.testing.assert_allclose(label.affine, source.affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(label.dataobj), np.asarray(source.dataobj) > 0.5)
        stored = nib.load(project / f"data/02_intermediate/cases/{case_id}/image.nii.gz")
        for channel in range(len(MODALITIES)):
            image = nib.load(folder / "imagesTr" / f"{case_id}_{channel:04d}.nii.gz")
            np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
            # the channel our models see: the case store's (RAS) channel, reoriented by nibabel itself
            canonical = nib.as_closest_canonical(image)
            np.testing.assert_allclose(np.asarray(canonical.dataobj), np.asarray(stored.dataobj)[..., channel],
                                       atol=1e-6)


def test_splits_final_json_is_our_folds(exported):
    """nnU-Net fold k validates on our test fold k and trains on our training folds of data.fold=k: with 3 folds
    and the validation fold k+1, that is fold k+2 alone."""
    project, folder = exported
    folds = pd.read_csv(project / "data/05_model_input/case_folds.csv")
    in_fold = {k: sorted(folds.loc[folds["fold"] == k, "case_id"]) for k in range(3)}
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == [{"train": in_fold[(k + 2) % 3], "val": in_fold[k]} for k in range(3)]

    # nnunet.train_cases=train_and_val: nnU-Net selects nothing on a validation fold, so it may train on it too
    run_kedro(project, "nnunet_export", {"data": DATA, "nnunet": {"root": str(folder.parent), "dataset_id": 7,
                                                                  "dataset_name": "Tiny", "train_cases": "train_and_val"}})
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == [{"train": sorted(in_fold[(k + 1) % 3] + in_fold[(k + 2) % 3]), "val": in_fold[k]}
                      for k in range(3)]


def test_nnunet_own_integrity_check_and_a_prediction_round_trip(exported):
    nnunet_check = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    project, folder = exported
    nnunet_check.verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem

    # nnU-Net writes a prediction with the geometry SimpleITK read from the case's images: do exactly that for
    # the test fold (the label as the "prediction"), then score the folder: Dice 1 on every case.
    predictions = project / "nnunet_predictions"
    predictions.mkdir()
    io = SimpleITKIO()
    folds = pd.read_csv(project / "data/05_model_input/case_folds.csv")
    test_cases = sorted(folds.loc[folds["fold"] == 0, "case_id"])
    for case_id in test_cases:
        segmentation, properties = io.read_seg(str(folder / "labelsTr" / f"{case_id}.nii.gz"))
        io.write_seg(segmentation[0].astype(np.uint8), str(predictions / f"{case_id}.nii.gz"), properties)
    run_kedro(project, "evaluation", {"data": {**DATA, "fold": 0},
                                      "evaluation": {"predictions": str(predictions), "method_name": "nnunet_2d"}})
    table = pd.read_csv(project / "data/08_reporting/nnunet_2d/case_metrics.csv")
    ours = table[table["method"] == "nnunet_2d"]
    assert sorted(ours["case_id"]) == test_cases
    assert ours["dice"].tolist() == pytest.approx([1.0] * len(test_cases))


@pytest.mark.parametrize(("dataset_id", "name", "problem"), [
    (0, "Tiny", "from 1 to 999"), (1000, "Tiny", "from 1 to 999"), ("7", "Tiny", "from 1 to 999"),
    (7, "Two words", "one folder name"), (7, "../up", "one folder name"),
])
def test_bad_dataset_ids_and_names_are_refused(dataset_id, name, problem):
    with pytest.raises(ValueError, match=problem):
        dataset_folder_name(dataset_id, name)


def test_folder_name_is_nnunet_s():
    assert dataset_folder_name(7, "Tiny") == "Dataset007_Tiny"
    assert dataset_folder_name(124, "ISLES24diffseg") == "Dataset124_ISLES24diffseg"
