"""Atomic checkpoint files, their safe loading and their retention policy.

A checkpoint is written to a temporary file in the same folder and renamed over the target, so a
crash mid-write never leaves a truncated ``latest.pt``: the previous one stays intact.

Checkpoints come from user-given paths (``training.resume``, ``evaluation.run``), so they are read
with ``weights_only=True``: tensors, containers and primitives only. The one other thing the trainer's
state holds is NumPy's global RNG state (a uint32 array), so exactly the globals that rebuild a plain
ndarray are allowed, for this load only.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_INTERVAL = re.compile(r"^step_(\d+)\.pt$")


def save_atomic(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# What np.random.get_state()'s key array pickles to: the array reconstructor of the installed NumPy
# (numpy.core in 1.x, numpy._core in 2.x), the array type, and the uint32 dtype (and its class in 2.x).
_NUMPY_ARRAY_GLOBALS = [np.ndarray(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds objects beyond plain training state; it was not loaded."""


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported (?:global|operand)[^.]*|but got <[^>]*>", str(exc))
        reason = f"({found.group(0)})" if found else ""
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it holds objects other than tensors, numbers, strings, "
            f"containers and a NumPy array, and loading those could run code {reason}".rstrip()
        ) from exc


class CheckpointFolder:
    """``latest.pt`` (for resume), ``best.pt`` (model selection) and the last K ``step_N.pt``."""

    def __init__(self, folder: Path, keep_last: int = 3):
        self.folder, self.keep_last = Path(folder), keep_last

    @property
    def latest(self) -> Path:
        return self.folder / "latest.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def interval_checkpoints(self) -> list[Path]:
        found = [(int(m.group(1)), p) for p in self.folder.glob("step_*.pt") if (m := _INTERVAL.match(p.name))]
        return [p for _, p in sorted(found)]

    def save_interval(self, state: dict[str, Any], step: int) -> Path:
        path = self.folder / f"step_{step:08d}.pt"
        save_atomic(state, path)
        for old in self.interval_checkpoints()[: -self.keep_last or None]:
            old.unlink()
        return path
