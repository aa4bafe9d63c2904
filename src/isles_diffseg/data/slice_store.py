"""The slice store: every axial slice of every case in memory-mappable arrays plus an index table.

Layout of a store folder::

    images.npy   (N, C, S, S) float16   windowed modalities, one row per slice
    masks.npy    (N, S, S)    uint8     lesion 0/1
    brain.npy    (N, S, S)    uint8     field of view 0/1
    index.parquet             row, case_id, slice, lesion_pixels, brain_pixels, train_keep
    store.json                image size, modalities, 2.5D context, per-case row ranges and geometry

Whole cases are stored (evaluation reassembles volumes from them); ``train_keep`` marks the slices
that the lesion-free-slice policy keeps for training. 2.5D context is assembled at read time from
neighbouring rows of the same case, so the store does not grow with the context width.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from isles_diffseg.data.case_volume import PreprocessedCase
from isles_diffseg.data.folder_swap import discard, start_staging, swap_in
from isles_diffseg.data.slicing import SliceGeometry, image_to_slices, mask_to_slices

INDEX_COLUMNS = ["row", "case_id", "slice", "lesion_pixels", "brain_pixels", "train_keep"]


class SliceStore:
    """Read access to a slice store (arrays memory-mapped, nothing loaded eagerly)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a slice store (no store.json); run the slicing pipeline")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.index = pd.read_parquet(self.path / "index.parquet")
        self._images = np.load(self.path / "images.npy", mmap_mode="r")
        self._masks = np.load(self.path / "masks.npy", mmap_mode="r")
        self._brain = np.load(self.path / "brain.npy", mmap_mode="r")
        n = len(self.index)
        self._lo = np.zeros(n, dtype=np.int64)
        self._hi = np.zeros(n, dtype=np.int64)
        for info in self.meta["cases"].values():
            start, count = info["start"], info["count"]
            self._lo[start : start + count] = start
            self._hi[start : start + count] = start + count

    def __len__(self) -> int:
        return len(self.index)

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def context_slices(self) -> int:
        return int(self.meta["context_slices"])

    @property
    def image_channels(self) -> int:
        """Channels a model sees: modalities x (2k + 1)."""
        return len(self.modalities) * (2 * self.context_slices + 1)

    @property
    def case_ids(self) -> list[str]:
        return list(self.meta["cases"])

    def case_rows(self, case_id: str) -> np.ndarray:
        info = self.meta["cases"][case_id]
        return np.arange(info["start"], info["start"] + info["count"])

    def geometry(self, case_id: str) -> SliceGeometry:
        return SliceGeometry.from_dict(self.meta["cases"][case_id]["geometry"])

    def images(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """(B, C * (2k + 1), S, S) float32, slice-major: all modalities of slice s-k, ..., then s+k.

        Neighbours beyond the first/last slice of a case are zeros (the windowed background value).
        """
        rows = np.asarray(rows, dtype=np.int64)
        k = self.context_slices
        if k == 0:
            return np.asarray(self._images[rows], dtype=np.float32)
        c = self._images.shape[1]
        out = np.zeros((len(rows), c * (2 * k + 1), *self._images.shape[2:]), dtype=np.float32)
        for j, offset in enumerate(range(-k, k + 1)):
            neighbour = rows + offset
            valid = (neighbour >= self._lo[rows]) & (neighbour < self._hi[rows])
            if valid.any():
                out[valid, j * c : (j + 1) * c] = self._images[neighbour[valid]]
        return out

    def masks(self, rows: np.ndarray | list[int]) -> np.ndarray:
        return np.asarray(self._masks[np.asarray(rows, dtype=np.int64)])

    def brain(self, rows: np.ndarray | list[int]) -> np.ndarray:
        return np.asarray(self._brain[np.asarray(rows, dtype=np.int64)])


@dataclass
class CaseSlices:
    """One case's slices, ready to be appended to a store."""

    case_id: str
    images: np.ndarray  # (Z, C, S, S)
    masks: np.ndarray  # (Z, S, S) uint8
    brain: np.ndarray  # (Z, S, S) uint8
    geometry: SliceGeometry

    @classmethod
    def from_case(cls, case: PreprocessedCase, image_size: int, mask_interpolation: str) -> CaseSlices:
        """The axial slices of a canonical case, padded square and resampled to ``image_size``."""
        if case.mask is None:
            raise ValueError(f"{case.case_id} has no lesion mask; the slice store needs ground truth")
        geometry = SliceGeometry.plan(tuple(case.image.shape[:3]), image_size)
        return cls(case.case_id, image_to_slices(case.image, geometry),
                   mask_to_slices(case.mask, geometry, mask_interpolation),
                   mask_to_slices(case.brain, geometry, "nearest"), geometry)


class SliceStoreWriter:
    """Fills a store case by case into a staging folder beside ``path``; :meth:`close` swaps it in.

    Until then the previous store at ``path`` is untouched; :meth:`discard` drops a failed attempt.
    """

    def __init__(self, path: str | Path, *, n_slices: int, channels: int, image_size: int, meta: dict[str, Any]):
        self.path = Path(path)
        self.tmp = start_staging(self.path)
        shape = (n_slices, image_size, image_size)
        self._images = np.lib.format.open_memmap(
            self.tmp / "images.npy", mode="w+", dtype=np.float16, shape=(n_slices, channels, image_size, image_size)
        )
        self._masks = np.lib.format.open_memmap(self.tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=shape)
        self._brain = np.lib.format.open_memmap(self.tmp / "brain.npy", mode="w+", dtype=np.uint8, shape=shape)
        self.meta = {**meta, "image_size": image_size, "n_slices": n_slices, "cases": {}}
        self._rows: list[dict[str, Any]] = []
        self._next = 0

    def add(self, case: CaseSlices) -> None:
        z = case.images.shape[0]
        start = self._next
        if start + z > self._images.shape[0]:
            raise ValueError(f"{case.case_id}: store was sized for {self._images.shape[0]} slices, overflow")
        self._images[start : start + z] = case.images.astype(np.float16)
        self._masks[start : start + z] = case.masks
        self._brain[start : start + z] = case.brain
        self.meta["cases"][case.case_id] = {"start": start, "count": z, "geometry": case.geometry.to_dict()}
        lesion = case.masks.reshape(z, -1).sum(axis=1)
        brain = case.brain.reshape(z, -1).sum(axis=1)
        for s in range(z):
            self._rows.append(
                {"row": start + s, "case_id": case.case_id, "slice": s,
                 "lesion_pixels": int(lesion[s]), "brain_pixels": int(brain[s]), "train_keep": True}
            )
        self._next += z

    def index(self) -> pd.DataFrame:
        """The index rows written so far (``train_keep`` still all True)."""
        return pd.DataFrame(self._rows, columns=INDEX_COLUMNS)

    def close(self, train_keep: np.ndarray | None = None) -> SliceStore:
        if self._next != self._images.shape[0]:
            raise ValueError(f"store expected {self._images.shape[0]} slices, got {self._next}")
        for array in (self._images, self._masks, self._brain):
            array.flush()
        del self._images, self._masks, self._brain
        index = self.index()
        if train_keep is not None:
            index["train_keep"] = np.asarray(train_keep, dtype=bool)
        index.to_parquet(self.tmp / "index.parquet", index=False)
        (self.tmp / "store.json").write_text(json.dumps(self.meta, indent=1))
        swap_in(self.tmp, self.path)
        return SliceStore(self.path)

    def discard(self) -> None:
        """Drop the partly written store; the previous one at ``path`` stays as it was."""
        for name in ("_images", "_masks", "_brain"):
            if hasattr(self, name):
                delattr(self, name)  # closes the memory maps before their files go
        discard(self.tmp)


def lesion_free_keep_mask(index: pd.DataFrame, *, policy: str, keep_fraction: float, drop_outside_brain: bool, seed: int) -> np.ndarray:
    """Which slices training uses: all lesion slices, and lesion-free ones according to ``policy``.

    ``keep_all`` keeps every lesion-free slice; ``keep_fraction`` keeps a seeded random fraction
    of them. Slices without any brain are dropped when ``drop_outside_brain`` is set.
    """
    if policy not in ("keep_all", "keep_fraction"):
        raise ValueError(f"lesion-free slice policy must be 'keep_all' or 'keep_fraction', got {policy!r}")
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    lesion = index["lesion_pixels"].to_numpy() > 0
    keep = np.ones(len(index), dtype=bool)
    if policy == "keep_fraction":
        rng = np.random.default_rng(seed)
        keep = lesion | (rng.random(len(index)) < keep_fraction)
    if drop_outside_brain:
        keep &= index["brain_pixels"].to_numpy() > 0
    return keep
