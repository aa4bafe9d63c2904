"""Timestep respacing: which steps of a T-step process a shorter sampling chain keeps, and its betas."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RespacingSpec = str | int | Sequence[int]

DDIM_PREFIX = "ddim"
TRAILING_PREFIX = "trailing"


def space_timesteps(num_timesteps: int, spec: RespacingSpec) -> list[int]:
    """Sorted original timesteps kept by a respaced chain.

    ``spec`` is one of
    - ``"ddimN"``: the evenly strided steps ``0, k, 2k, ...`` with the stride k giving exactly N steps
      (improved-diffusion's DDIM spacing; it never visits the last steps: ddim10 starts at t = 900);
    - ``"trailingN"``: N steps ending at ``T - 1``, ``round(T - i T / N) - 1`` for i < N (Lin et al. 2024,
      "Common diffusion noise schedules and sample steps are flawed"), so sampling starts from the step whose
      x_t really is the pure noise it is given: trailing10 keeps 99, 199, ..., 999;
    - an int N (or ``"N"``): N steps spread evenly over ``[0, T-1]``, both ends included;
    - section counts ``"a,b,c"`` (or a sequence of ints): T is cut into equal sections and section i
      keeps ``counts[i]`` evenly spread steps (improved-diffusion's semantics).
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
    if isinstance(spec, str) and spec.startswith(DDIM_PREFIX):
        return _ddim_strided(num_timesteps, _parse_count(spec[len(DDIM_PREFIX) :], spec))
    if isinstance(spec, str) and spec.startswith(TRAILING_PREFIX):
        return _trailing(num_timesteps, _parse_count(spec[len(TRAILING_PREFIX) :], spec))
    return _sectioned(num_timesteps, _section_counts(spec))


def respaced_betas(alphas_cumprod: np.ndarray, kept: Sequence[int]) -> np.ndarray:
    """Betas of the chain over ``kept`` steps that reproduce the original alphas_cumprod at each kept step."""
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
    kept_array = np.asarray(kept, dtype=np.int64)
    if kept_array.ndim != 1 or kept_array.size == 0 or np.any(np.diff(kept_array) <= 0):
        raise ValueError("kept timesteps must be a non-empty, strictly increasing sequence")
    if kept_array[0] < 0 or kept_array[-1] >= alphas_cumprod.size:
        raise ValueError(f"kept timesteps must lie in [0, {alphas_cumprod.size})")
    kept_alphas_cumprod = alphas_cumprod[kept_array]
    previous = np.concatenate([[1.0], kept_alphas_cumprod[:-1]])
    return 1.0 - kept_alphas_cumprod / previous


def _ddim_strided(num_timesteps: int, count: int) -> list[int]:
    for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == count:
            return list(range(0, num_timesteps, stride))
    raise ValueError(f"no integer stride gives exactly {count} steps out of {num_timesteps} ('ddim{count}')")


def _trailing(num_timesteps: int, count: int) -> list[int]:
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"'trailing{count}' needs between 1 and {num_timesteps} steps")
    return sorted({int(round(num_timesteps - i * num_timesteps / count)) - 1 for i in range(count)})


def _sectioned(num_timesteps: int, counts: list[int]) -> list[int]:
    section_size, remainder = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for index, count in enumerate(counts):
        size = section_size + (1 if index < remainder else 0)
        if count > size:
            raise ValueError(f"cannot keep {count} steps from a section of {size} timesteps")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        kept.extend(start + round(stride * position) for position in range(count))
        start += size
    return sorted(set(kept))


def _section_counts(spec: RespacingSpec) -> list[int]:
    if isinstance(spec, bool):
        raise TypeError("a respacing spec cannot be a bool")
    if isinstance(spec, int | np.integer):
        counts = [int(spec)]
    elif isinstance(spec, str):
        counts = [_parse_count(part, spec) for part in spec.split(",")]
    else:
        counts = [int(count) for count in spec]
    if not counts or any(count < 1 for count in counts):
        raise ValueError(f"respacing needs positive step counts, got {spec!r}")
    return counts


def _parse_count(text: str, spec: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot parse respacing spec {spec!r}; expected 'ddimN', 'trailingN', an int or 'a,b,c'"
        ) from None
