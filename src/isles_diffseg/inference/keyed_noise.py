"""Gaussian noise keyed to each sample, so a prediction does not depend on what it was batched with.

Drawing a batch's noise from one generator ties every slice's noise to its position in the batch: the
same slice gets another sample when the batch size changes or when slices of other cases share its
batch. Here each sample has a 32-bit key (seed, case, slice, ensemble member) and each draw a stream
number (0 = the initial x_T, k = the noise of the k-th loop step); the noise is a pure function of
(key, stream, element index), computed by a counter-based hash on the device, without a generator,
without a host round trip and identical whatever else is in the batch.

The hash is the "lowbias32" integer finaliser (two rounds per element), on int64 tensors holding
uint32 values; two 24-bit uniforms per pair of elements give two standard normals (Box-Muller).
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # keeps 0 from hashing to 0 (the finaliser maps 0 to itself)


def mix32(x: Tensor) -> Tensor:
    """A bijective avalanche of uint32 values held in an int64 tensor (products wrap; the mask keeps 32 bits)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def combine(key: Tensor, value: Tensor | int) -> Tensor:
    """A new key from a key and one more component; for a fixed component distinct keys stay distinct."""
    return mix32(((key ^ value) + _GOLDEN) & _MASK)


def case_key(case_id: str) -> int:
    """A stable 32-bit number for a case id (CRC-32: the same in every process, unlike ``hash``)."""
    return zlib.crc32(case_id.encode("utf-8"))


def sample_keys(seed: int, case_keys: Tensor, slice_indices: Tensor, members: Tensor) -> Tensor:
    """One key per sample, shape (B,) int64, from per-sample case keys, slice indices and member numbers."""
    start = torch.full_like(case_keys, int(seed) & _MASK)
    return combine(combine(combine(mix32(start), case_keys), slice_indices), members)


def keyed_normal(keys: Tensor, stream: int, shape: tuple[int, ...]) -> Tensor:
    """Standard normal float32 noise of ``shape`` (B, ...) whose row b depends only on (keys[b], stream)."""
    if keys.ndim != 1 or keys.shape[0] != shape[0]:
        raise ValueError(f"need one key per sample: keys {tuple(keys.shape)} for noise of shape {shape}")
    count = math.prod(shape[1:])
    pairs = (count + 1) // 2
    base = combine(keys, stream)[:, None]
    counter = torch.arange(2 * pairs, device=keys.device, dtype=torch.int64)[None, :]
    bits = mix32(combine(base, counter))
    # the top 24 bits as a float32 uniform in (0, 1): exact, and never 0, so the log below stays finite
    uniform = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
    radius = torch.sqrt(-2.0 * torch.log(uniform[:, 0::2]))
    angle = (2.0 * math.pi) * uniform[:, 1::2]
    normal = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1).reshape(shape[0], -1)
    return normal[:, :count].reshape(shape)
