"""Seeded, resumable batches of slice-store rows, sharded across distributed ranks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from isles_diffseg.data.slice_store import SliceStore


@dataclass
class SamplerState:
    epoch: int = 0
    position: int = 0


class SliceBatchSampler:
    """Endless batches: each epoch is a seeded permutation of ``rows``; rank r takes every world-th batch row.

    The state (epoch, position) is all a resumed run needs to continue with the very same batches.
    """

    def __init__(self, rows: np.ndarray, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        if len(rows) == 0:
            raise ValueError("no training slices: check the split (data.fold) and the lesion-free slice policy")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rows, self.batch_size, self.seed = np.asarray(rows, dtype=np.int64), batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.state = SamplerState()
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
        return order[self.rank :: self.world_size]

    def next_batch(self) -> np.ndarray:
        if self.state.position + self.batch_size > len(self._order):
            self.state = SamplerState(self.state.epoch + 1, 0)
            self._order = self._permutation(self.state.epoch)
            if self.batch_size > len(self._order):
                raise ValueError(f"batch_size {self.batch_size} exceeds the {len(self._order)} training slices per rank")
        batch = self._order[self.state.position : self.state.position + self.batch_size]
        self.state.position += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.state.epoch, "position": self.state.position}

    def load_state_dict(self, state: dict) -> None:
        self.state = SamplerState(state["epoch"], state["position"])
        self._order = self._permutation(self.state.epoch)


def load_batch(store: SliceStore, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, C', S, S) float32 and masks (B, 1, S, S) float32 on ``device``."""
    image = torch.from_numpy(store.images(rows))
    mask = torch.from_numpy(store.masks(rows).astype(np.float32))[:, None]
    non_blocking = device.type == "cuda"
    if non_blocking:
        image, mask = image.pin_memory(), mask.pin_memory()
    return image.to(device, non_blocking=non_blocking), mask.to(device, non_blocking=non_blocking)
