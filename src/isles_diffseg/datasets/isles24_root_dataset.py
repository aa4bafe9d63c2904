"""An ISLES'24-layout dataset folder as a catalog entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kedro.io import AbstractDataset


@dataclass(frozen=True)
class Isles24Root:
    """The root folder of an ISLES'24 release (``derivatives/``, ``raw_data/``, ...)."""

    path: Path


class DatasetWriter(Protocol):
    def write_to(self, root: Path) -> Any: ...


class Isles24RootDataset(AbstractDataset[DatasetWriter, Isles24Root]):
    """Loads as :class:`Isles24Root`; saving hands the folder to a writer (the synthetic generator)."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Isles24Root:
        if not self._path.is_dir():
            raise FileNotFoundError(
                f"ISLES'24 dataset root {self._path} does not exist: run `kedro run --pipelines synthetic` "
                "or pass --params data.root=/path/to/ISLES24/train"
            )
        return Isles24Root(self._path)

    def save(self, data: DatasetWriter) -> None:
        self._path.mkdir(parents=True, exist_ok=True)
        data.write_to(self._path)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
