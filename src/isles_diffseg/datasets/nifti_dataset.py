"""A single NIfTI image as a catalog entry (used per partition for prediction folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
from kedro.io import AbstractDataset


class NiftiDataset(AbstractDataset[nib.Nifti1Image, nib.Nifti1Image]):
    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> nib.Nifti1Image:
        return nib.load(str(self._filepath))

    def save(self, data: nib.Nifti1Image) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        nib.save(data, str(self._filepath))

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
