"""Kedro datasets for the artifacts kedro-datasets has no type for (NIfTI folders, slice stores)."""

from isles_diffseg.datasets.case_store_dataset import CaseStoreDataset
from isles_diffseg.datasets.isles24_root_dataset import Isles24Root, Isles24RootDataset
from isles_diffseg.datasets.nifti_dataset import NiftiDataset
from isles_diffseg.datasets.nnunet_raw_dataset import NnUNetExport, NnUNetRawDataset
from isles_diffseg.datasets.run_scoped_dataset import RunArtifact, RunScopedDataset
from isles_diffseg.datasets.slice_store_dataset import SliceStoreDataset
from isles_diffseg.datasets.training_run_dataset import RunFoldersDataset, TrainedRun, TrainingRunDataset

__all__ = [
    "CaseStoreDataset",
    "Isles24Root",
    "Isles24RootDataset",
    "NiftiDataset",
    "NnUNetExport",
    "NnUNetRawDataset",
    "RunArtifact",
    "RunFoldersDataset",
    "RunScopedDataset",
    "SliceStoreDataset",
    "TrainedRun",
    "TrainingRunDataset",
]
