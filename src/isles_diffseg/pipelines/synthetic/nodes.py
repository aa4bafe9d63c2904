"""Synthetic nodes: write the built-in ISLES'24-layout dataset, then summarise what is on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from isles_diffseg.data.discovery import discover_cases
from isles_diffseg.data.folder_swap import replacing_folder
from isles_diffseg.data.synthetic import write_synthetic_dataset
from isles_diffseg.datasets.isles24_root_dataset import Isles24Root


@dataclass
class SyntheticDatasetWriter:
    """Generates the synthetic release into the catalog's folder when the dataset is saved.

    With ``overwrite`` (the default) the release is generated beside the folder and replaces it only once
    every case is written, so a failed or interrupted run leaves the previous release whole; the folder
    (``synthetic_root``) belongs to the generator. Without it, cases are added to the folder in place.
    """

    params: dict[str, Any]

    def write_to(self, root: Path) -> None:
        if not self.params.get("overwrite", True):
            write_synthetic_dataset(root, **self.params)
            return
        with replacing_folder(root) as staging:
            write_synthetic_dataset(staging, **self.params)


def generate_synthetic_dataset(synthetic: dict[str, Any]) -> SyntheticDatasetWriter:
    return SyntheticDatasetWriter(dict(synthetic))


def summarise_release(root: Isles24Root) -> pd.DataFrame:
    """One row per case as found on disk: grid, voxel size and ground-truth lesion volume."""
    rows = []
    for files in discover_cases(root.path):
        row: dict[str, Any] = {"case_id": files.case_id}
        row.update({f"has_{m}": p is not None for m, p in files.modalities.items()})
        if files.mask is not None:
            mask = nib.load(str(files.mask))
            zooms = mask.header.get_zooms()[:3]
            voxels = int((np.asarray(mask.dataobj, dtype=np.float32) > 0.5).sum())
            row.update(shape="x".join(map(str, mask.shape)), zooms_mm=",".join(f"{z:.3g}" for z in zooms),
                       axcodes="".join(nib.aff2axcodes(mask.affine)), lesion_voxels=voxels,
                       lesion_volume_ml=voxels * float(np.prod(zooms)) / 1000.0)
        rows.append(row)
    return pd.DataFrame(rows)
