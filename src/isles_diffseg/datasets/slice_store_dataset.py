"""The slice store as a catalog entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from isles_diffseg.data.slice_store import SliceStore


class SliceStoreDataset(AbstractDataset[Callable[[Path], SliceStore], SliceStore]):
    """Loads a memory-mapped :class:`SliceStore`.

    Saving takes a callable ``build(path) -> SliceStore`` that streams cases into the store, so the
    node never holds every slice in memory.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> SliceStore:
        return SliceStore(self._path)

    def save(self, data: Callable[[Path], SliceStore]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        data(self._path)

    def _exists(self) -> bool:
        return (self._path / "store.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
