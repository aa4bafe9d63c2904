"""Artifacts that belong to one training run: saved under ``<path>/<run_name>/``.

Nodes return :class:`RunArtifact` (run name + payload). A load returns the artifact of the run this
dataset saved in the same ``kedro run`` (what the next node means); in a later session (a notebook,
``--from-nodes score_cases``) that of the run ``run`` names (``evaluation.run``), else of the latest
finished training run (:func:`~isles_diffseg.datasets.training_run_dataset.latest_run` over ``latest_of``'s
``path`` and ``key``: the same answer the ``training_run`` entry gives; there is no other "latest" pointer).
``latest_of`` is a mapping with a ``path`` key so that Kedro makes that path absolute like any other
catalog path (a notebook runs in ``notebooks/``).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import parse_dataset_definition

from isles_diffseg.datasets.training_run_dataset import latest_run
from isles_diffseg.training.run_config import check_run_name


@dataclass
class RunArtifact:
    run_name: str
    data: Any


class RunScopedDataset(AbstractDataset[RunArtifact, Any]):
    """Wraps any dataset (``dataset: {type: ...}``) whose file or folder is ``<path>/<run>/<artifact>``.

    ``artifact`` "" means the run folder itself. (The argument is not called ``filename``: Kedro would
    turn a relative ``filename`` into an absolute path at the project root.) Saving several
    ``RunArtifact`` chunks of one run (a generator node) adds to the same artifact; the first save of a run
    in a session replaces what an earlier session left there when ``replace`` is true (a folder of
    per-case files must not keep cases of an older evaluation).
    """

    def __init__(self, path: str, artifact: str, dataset: dict[str, Any], latest_of: dict[str, str],
                 run: str | None = None, path_argument: str = "filepath", replace: bool = False,
                 metadata: dict[str, Any] | None = None):
        if Path(artifact).is_absolute():
            raise ValueError(f"artifact must be relative to the run folder, got {artifact!r}")
        self._path, self._artifact = Path(path), artifact
        self._runs, self._key = Path(latest_of["path"]), latest_of.get("key", "training_run")
        self._run = None if run in (None, "") else check_run_name(str(run), "evaluation.run")
        self._dataset = dataset if isinstance(dataset, dict) else {"type": dataset}
        self._path_argument = path_argument
        self._replace = replace
        self._saved: str | None = None
        self.metadata = metadata

    def _inner(self, run_name: str) -> AbstractDataset:
        config = copy.deepcopy(self._dataset)
        config[self._path_argument] = str(self._path / run_name / self._artifact)
        dataset_class, kwargs = parse_dataset_definition(config)
        return dataset_class(**kwargs)

    def run_name(self) -> str:
        name = self._saved or self._run or latest_run(self._runs, self._key)
        if name is None:
            raise DatasetError(f"no finished training run under {self._runs}; set evaluation.run=<run name>")
        return name

    def load(self) -> Any:
        return self._inner(self.run_name()).load()

    def save(self, data: RunArtifact) -> None:
        if not isinstance(data, RunArtifact):
            raise TypeError(f"expected a RunArtifact(run_name, data), got {type(data).__name__}")
        name = check_run_name(data.run_name, "run name")
        target = self._path / name / self._artifact
        if self._replace and self._saved != name and target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        (self._path / name).mkdir(parents=True, exist_ok=True)
        self._inner(name).save(data.data)
        self._saved = name

    def _exists(self) -> bool:
        try:
            return self._inner(self.run_name()).exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "artifact": self._artifact, "dataset": self._dataset.get("type")}
