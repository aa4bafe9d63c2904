"""Artifacts that belong to one training run: saved under ``<path>/<run_name>/``.

Nodes return :class:`RunArtifact` (run name + payload). Loading returns the payload of the run
saved last through the same ``key`` (a pointer file ``<path>/.latest/<key>``), which is what the
next node of the same ``kedro run`` needs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro.io.core import parse_dataset_definition


@dataclass
class RunArtifact:
    run_name: str
    data: Any


class RunScopedDataset(AbstractDataset[RunArtifact, Any]):
    """Wraps any dataset (``dataset: {type: ...}``) whose file or folder is ``<path>/<run>/<artifact>``.

    ``artifact`` "" means the run folder itself. (The argument is not called ``filename``: Kedro would
    turn a relative ``filename`` into an absolute path at the project root.)
    """

    def __init__(self, path: str, artifact: str, dataset: dict[str, Any], key: str,
                 path_argument: str = "filepath", metadata: dict[str, Any] | None = None):
        if Path(artifact).is_absolute():
            raise ValueError(f"{key}: artifact must be relative to the run folder, got {artifact!r}")
        self._path, self._artifact, self._key = Path(path), artifact, key
        self._dataset = dataset if isinstance(dataset, dict) else {"type": dataset}
        self._path_argument = path_argument
        self.metadata = metadata

    def _inner(self, run_name: str) -> AbstractDataset:
        config = copy.deepcopy(self._dataset)
        config[self._path_argument] = str(self._path / run_name / self._artifact)
        dataset_class, kwargs = parse_dataset_definition(config)
        return dataset_class(**kwargs)

    @property
    def _pointer(self) -> Path:
        return self._path / ".latest" / self._key

    def latest_run(self) -> str:
        if not self._pointer.is_file():
            raise FileNotFoundError(f"nothing saved yet under {self._path} for {self._key!r}")
        return self._pointer.read_text().strip()

    def load(self) -> Any:
        return self._inner(self.latest_run()).load()

    def save(self, data: RunArtifact) -> None:
        if not isinstance(data, RunArtifact):
            raise TypeError(f"{self._key}: expected a RunArtifact(run_name, data), got {type(data).__name__}")
        (self._path / data.run_name).mkdir(parents=True, exist_ok=True)
        self._inner(data.run_name).save(data.data)
        self._pointer.parent.mkdir(parents=True, exist_ok=True)
        self._pointer.write_text(data.run_name)

    def _exists(self) -> bool:
        return self._pointer.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "artifact": self._artifact, "dataset": self._dataset.get("type")}
