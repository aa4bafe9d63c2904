"""Atomic checkpoint files and their retention policy.

A checkpoint is written to a temporary file in the same folder and renamed over the target, so a
crash mid-write never leaves a truncated ``latest.pt``: the previous one stays intact.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

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


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=False)


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
