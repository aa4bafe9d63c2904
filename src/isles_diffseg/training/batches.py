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


class ResidentSlices:
    """The training rows' images and masks, assembled once and kept on ``device`` as the store holds them.

    Images are stored float16 and masks uint8, so the float16/uint8 copies here are exact and a batch is
    bit-identical to :func:`load_batch`'s; only the memory-mapped read and the host-to-device copy per
    step go away (the input pipeline was 20 % of a GPU step). 2.5D context is assembled by the store's
    own reader, so neighbours outside a case are the same zeros.
    """

    def __init__(self, store: SliceStore, rows: np.ndarray, device: torch.device, chunk: int = 512):
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        self._position = np.full(len(store), -1, dtype=np.int64)
        self._position[self.rows] = np.arange(len(self.rows))
        size = store.image_size
        self.images = torch.empty((len(self.rows), store.image_channels, size, size), dtype=torch.float16, device=device)
        self.masks = torch.empty((len(self.rows), size, size), dtype=torch.uint8, device=device)
        for start in range(0, len(self.rows), chunk):
            part = self.rows[start : start + chunk]
            self.images[start : start + len(part)] = torch.from_numpy(store.images(part).astype(np.float16))
            self.masks[start : start + len(part)] = torch.from_numpy(store.masks(part))
        self.device = device

    @staticmethod
    def nbytes(store: SliceStore, n_rows: int) -> int:
        size = store.image_size
        return n_rows * size * size * (2 * store.image_channels + 1)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C', S, S) float32 and masks (B, 1, S, S) float32, as :func:`load_batch` returns them."""
        positions = self._position[np.asarray(rows, dtype=np.int64)]
        if (positions < 0).any():
            raise KeyError(f"rows {np.asarray(rows)[positions < 0][:5].tolist()} are not resident")
        index = torch.from_numpy(positions).to(self.device)
        return self.images[index].float(), self.masks[index].float()[:, None]
