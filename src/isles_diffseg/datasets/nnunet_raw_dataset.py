"""An nnU-Net v2 raw dataset folder (``$nnUNet_raw/Dataset<id>_<name>/``) as a catalog entry.

Layout (nnU-Net v2 "dataset format"): ``imagesTr/<case>_<channel:04d>.nii.gz``, ``labelsTr/<case>.nii.gz``,
``dataset.json`` and, beside them, ``splits_final.json``, which nnU-Net >= 2.6 copies into
``$nnUNet_preprocessed/Dataset<id>_<name>/`` when it plans the dataset and then trains its folds on.
The folder is written beside the old one and swapped in only when complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
from kedro.io import AbstractDataset, DatasetError

from isles_diffseg.data.folder_swap import replacing_folder

_NAME = re.compile(r"[A-Za-z0-9_-]+")


def dataset_folder_name(dataset_id: Any, name: Any) -> str:
    """``Dataset<id:03d>_<name>``; nnU-Net's ids are 1..999 and its names one folder-name token."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"nnunet.dataset_id must be an integer from 1 to 999 (nnU-Net's Dataset<id:03d>), "
                         f"got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"nnunet.dataset_name must be letters, digits, '_' or '-' (one folder name), got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


@dataclass
class NnUNetExport:
    folder: str                                             # Dataset<id>_<name>
    dataset_json: dict[str, Any]
    splits: list[dict[str, list[str]]]
    cases: dict[str, Callable[[], dict[str, nib.Nifti1Image]]]  # case -> {"imagesTr/<case>_0000": image, ...}


class NnUNetRawDataset(AbstractDataset[NnUNetExport, dict[str, Any]]):
    """``path``: nnU-Net's raw folder (``$nnUNet_raw``). Saving writes ``<path>/<export.folder>/``; loading
    gives ``{"folder", "dataset", "splits"}`` of the dataset named by ``dataset_id`` and ``dataset_name``."""

    def __init__(self, path: str, dataset_id: int, dataset_name: str, metadata: dict[str, Any] | None = None):
        self._path, self._id, self._name = Path(path), dataset_id, dataset_name
        self.metadata = metadata

    def _folder(self) -> Path:
        return self._path / dataset_folder_name(self._id, self._name)

    def save(self, data: NnUNetExport) -> None:
        target = self._path / data.folder
        ending = data.dataset_json["file_ending"]
        self._path.mkdir(parents=True, exist_ok=True)
        with replacing_folder(target) as staging:
            for sub in ("imagesTr", "labelsTr"):
                (staging / sub).mkdir()
            for load in data.cases.values():
                for name, image in load().items():
                    nib.save(image, str(staging / f"{name}{ending}"))
            (staging / "dataset.json").write_text(json.dumps(data.dataset_json, indent=1))
            (staging / "splits_final.json").write_text(json.dumps(data.splits, indent=1))

    def load(self) -> dict[str, Any]:
        folder = self._folder()
        if not (folder / "dataset.json").is_file():
            raise DatasetError(f"no nnU-Net dataset at {folder}: run `kedro run --pipelines nnunet_export`")
        return {"folder": str(folder), "dataset": json.loads((folder / "dataset.json").read_text()),
                "splits": json.loads((folder / "splits_final.json").read_text())}

    def _exists(self) -> bool:
        return (self._folder() / "dataset.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "dataset_id": self._id, "dataset_name": self._name}
