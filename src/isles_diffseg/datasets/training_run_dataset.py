"""A finished training run as a catalog entry.

A run folder ``<path>/<run_name>/`` is written by the trainer while it trains (``config.json``,
``history.csv``, ``checkpoints/{latest,best}.pt``); saving a :class:`TrainingResult` through this dataset
adds ``training_run.json``, the record that the run *finished*. Only finished runs can be loaded and only
they can be "the latest run", so an interrupted or still-running run is never evaluated by accident.

Whoever trains writes the record through this class: the Kedro training node (``kedro run``, and SLURM jobs,
which run it) and the torchrun entry point ``python -m isles_diffseg.train``. ``evaluation.run=<name>``
therefore finds runs made either way.

Loading gives a :class:`TrainedRun`: the record, the run config, the history, and the model built from
``best.pt`` on a device (built once per device and dataset, however many nodes ask for it). When
``predictions`` names a folder (``evaluation.predictions``), loading gives that folder instead, as
:class:`~isles_diffseg.evaluation.external.ExternalPredictions` named ``method_name``: the evaluation
pipeline then scores predictions made elsewhere in place of a run of ours.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from kedro.io import AbstractDataset, DatasetError

from isles_diffseg.evaluation.external import ExternalPredictions
from isles_diffseg.evaluation.trained_model import TrainedModel, load_trained_model
from isles_diffseg.training.run_config import RunConfig, check_run_name
from isles_diffseg.training.trainer import TrainingResult

RECORD = "training_run.json"


def finished_runs(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """``{run_name: record}`` of the runs under ``runs_dir`` that finished (have ``training_run.json``)."""
    runs = {}
    for record in sorted(Path(runs_dir).glob(f"*/{RECORD}")):
        try:
            runs[record.parent.name] = json.loads(record.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{record} is not valid JSON ({exc}); delete it or re-run the training") from exc
    return runs


def latest_run(runs_dir: Path, key: str = "training_run") -> str | None:
    """The finished run saved last (by its record's ``finished_at``) through the catalog entry ``key``: the
    project's one meaning of "the latest run". ``key`` keeps the demo's UNet (``unet_baseline``) from
    becoming the latest diffusion run (``training_run``) when both share a runs folder."""
    runs = {name: r for name, r in finished_runs(runs_dir).items() if r.get("key", "training_run") == key}
    return max(runs, key=lambda name: (runs[name].get("finished_at", ""), name)) if runs else None


def _unfinished_runs(runs_dir: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in Path(runs_dir).glob("*/checkpoints/latest.pt")
                  if not (p.parent.parent / RECORD).is_file())


@dataclass
class TrainedRun:
    """What evaluation needs from a training run; the model is read from ``best.pt`` on first use."""

    name: str
    record: dict[str, Any]
    config: RunConfig
    history: pd.DataFrame
    _folder: Path = field(repr=False)
    _models: dict[str, TrainedModel] = field(default_factory=dict, repr=False)

    def __getitem__(self, field_name: str) -> Any:
        """A field of the finished-run record (``run_name``, ``steps``, ``best_metric``, ...), as in a notebook's
        ``catalog.load("training_run")["run_name"]``."""
        return self.record[field_name]

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def split(self) -> dict[str, Any] | None:
        return self.config.extra.get("split")

    def model(self, device: torch.device) -> TrainedModel:
        key = str(device)
        if key not in self._models:
            self._models[key] = load_trained_model(self._folder, device)
        return self._models[key]


class TrainingRunDataset(AbstractDataset[TrainingResult, TrainedRun | ExternalPredictions]):
    """``path``: the folder of run folders; ``run``: the run to load (a name), or null for the latest run
    saved through ``key`` (the catalog entry: ``training_run``, or ``unet_baseline`` for the demo's UNet).

    After a save, loads return the run just saved (what the next node of the same ``kedro run`` means),
    whatever ``run`` says. ``predictions`` (a folder) makes loads return the external predictions there,
    named ``method_name`` (default: the folder's name), and is refused together with ``run``.
    """

    def __init__(self, path: str, run: str | None = None, key: str = "training_run",
                 predictions: str | None = None, method_name: str | None = None,
                 metadata: dict[str, Any] | None = None):
        self._path, self._key = Path(path), key
        self._run = None if run in (None, "") else check_run_name(str(run), "evaluation.run")
        self._external = None
        if predictions not in (None, ""):
            if self._run is not None:
                raise DatasetError(f"evaluation.run={self._run!r} and evaluation.predictions={predictions!r} both name "
                                   "what to evaluate; give one of them")
            folder = Path(str(predictions)).expanduser()
            name = check_run_name(str(method_name) if method_name not in (None, "") else folder.name,
                                  "evaluation.method_name")
            self._external = ExternalPredictions(name, folder)
        self._saved: str | None = None
        self._loaded: dict[str, TrainedRun] = {}
        self.metadata = metadata

    def run_name(self) -> str:
        """The run a load returns: saved in this session, else ``run``, else the latest finished run."""
        name = self._saved or self._run or latest_run(self._path, self._key)
        if name is None:
            raise DatasetError(f"no finished training run under {self._path}: run `kedro run --pipelines training` "
                               f"(or set evaluation.run){self._unfinished_hint()}")
        if not (self._path / name / RECORD).is_file():
            available = sorted(finished_runs(self._path))
            raise DatasetError(f"evaluation.run={name!r} is not a finished training run under {self._path}; "
                               f"finished runs: {available or 'none'}{self._unfinished_hint()}")
        return name

    def _unfinished_hint(self) -> str:
        unfinished = _unfinished_runs(self._path)
        return f"; interrupted or still running (resume with training.resume=<name>): {unfinished}" if unfinished else ""

    def load(self) -> TrainedRun | ExternalPredictions:
        if self._external is not None and self._saved is None:
            return self._external
        name = self.run_name()
        if name not in self._loaded:
            folder = self._path / name
            record = json.loads((folder / RECORD).read_text())
            config = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
            history_file = folder / "history.csv"
            history = pd.read_csv(history_file) if history_file.is_file() and history_file.stat().st_size > 1 \
                else pd.DataFrame()
            self._loaded[name] = TrainedRun(name, record, config, history, folder)
        return self._loaded[name]

    def save(self, data: TrainingResult) -> None:
        if not isinstance(data, TrainingResult):
            raise TypeError(f"training_run: expected a TrainingResult, got {type(data).__name__}")
        if data.interrupted:
            raise DatasetError(f"training run {data.run_name} was interrupted: it is not saved as a finished run "
                               f"(resume with training.resume={data.run_name})")
        name = check_run_name(data.run_name, "training.run_name")
        folder = self._path / name
        if not (folder / "checkpoints" / "best.pt").is_file():
            raise DatasetError(f"training run {name} has no {folder / 'checkpoints' / 'best.pt'}; nothing to evaluate")
        record = {**{k: v for k, v in asdict(data).items() if k not in ("history", "run_dir")},
                  "key": self._key, "finished_at": datetime.now(UTC).isoformat(timespec="microseconds")}
        tmp = folder / f".{RECORD}.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        tmp.replace(folder / RECORD)  # the record appears whole or not at all
        self._saved = name
        self._loaded.pop(name, None)

    def _exists(self) -> bool:
        if self._external is not None and self._saved is None:
            return self._external.folder.is_dir()
        try:
            self.run_name()
        except DatasetError:
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "run": self._run, "key": self._key,
                "predictions": None if self._external is None else str(self._external.folder)}


class RunFoldersDataset(AbstractDataset[None, list[str]]):
    """Read-only: the names of all run folders under ``path``, finished or not (empty when there is none),
    for nodes that must not start a run over an existing one."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> list[str]:
        if not self._path.is_dir():
            return []
        return sorted(p.name for p in self._path.iterdir() if p.is_dir() and not p.name.startswith("."))

    def save(self, _data: None) -> None:
        raise DatasetError(f"{self._path}: run folders are written by training, not saved through this dataset")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
