"""Preprocessed cases (one NIfTI folder per case) as a catalog entry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from isles_diffseg.data.case_store import CaseOrFailure, CaseStore, write_case_store


class CaseStoreDataset(AbstractDataset[Mapping[str, CaseOrFailure | Callable[[], CaseOrFailure]], CaseStore]):
    """Saves ``{case_id: case or callable}`` lazily, one case in memory at a time; loads a :class:`CaseStore`."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> CaseStore:
        return CaseStore(self._path)

    def save(self, data: Mapping[str, CaseOrFailure | Callable[[], CaseOrFailure]]) -> None:
        write_case_store(self._path, data)

    def _exists(self) -> bool:
        return (self._path).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
