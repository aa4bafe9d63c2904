"""Synthetic ischaemia: an arterial territory in one hemisphere, its perfusion deficit and final infarct.

Model (all hidden; only the resulting maps and the final mask are ever written):

* An occluded artery feeds a cone-shaped territory that opens from a vessel origin near the midline
  (M1-like, large) or from a distal branch point (M2/M3-like, small) towards the lateral cortex of
  one hemisphere. The normalised angle from the cone axis, roughened by a smooth random field,
  grades every voxel from the territory core (0) to its edge (1).
* ``flow_deficit`` (0..1) drives CBF down and Tmax up; good collaterals (per-case factor) shrink it.
* The whole territory, plus a margin, has delayed arrival (benign oligaemia): Tmax rises above 6 s
  there even where flow is nearly normal, and more so with better (slower) collateral filling.
  This is why "Tmax > 6 s" overestimates the infarct while CBF tells the two apart.
* The final infarct is ``flow_deficit > tau`` plus a smooth random field, with ``tau`` set by an
  unobserved reperfusion factor: good reperfusion saves most of the penumbra, none saves little.
  So the mask is not an iso-contour of any input map.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from isles_diffseg.data.synthetic_anatomy import FieldGrid

_GOLDEN_FRACTION = (math.sqrt(5.0) - 1.0) / 2.0


class LesionKind(enum.StrEnum):
    """What a case holds: no lesion, a distal-branch (small) or a proximal (large) territory infarct."""

    NONE = "none"
    SMALL = "small"
    LARGE = "large"


@dataclass(frozen=True)
class LesionMix:
    """Lesion-mix knobs (the ``lesions:`` block of ``parameters_synthetic.yml``)."""

    n_empty: int = 1  # cases without a lesion, spread evenly from index 0
    small_fraction: float = 0.3  # share of cases with a distal-branch (small) lesion
    large_half_angle_deg: tuple[float, float] = (40.0, 60.0)  # proximal territory cone opening
    small_half_angle_deg: tuple[float, float] = (20.0, 30.0)  # distal-branch cone opening
    reperfusion_beta: tuple[float, float] = (2.0, 2.0)  # Beta(a, b) of the hidden reperfusion factor
    min_lesion_ml: float = 0.5  # a lesion case whose final infarct is smaller gets a new occlusion

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> LesionMix:
        """Build from a parameters mapping; unknown keys are an error, lists become tuples."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown lesion settings {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def empty_case_indices(n_cases: int, n_empty: int) -> set[int]:
    """Case indices without a lesion: evenly spread, always including index 0 when ``n_empty`` > 0."""
    n_empty = min(max(n_empty, 0), n_cases)
    return {int(k * n_cases // n_empty) for k in range(n_empty)} if n_empty else set()


def lesion_kind_for(index: int, n_cases: int, mix: LesionMix) -> LesionKind:
    """Deterministic kind of case ``index`` (independent of the seed, so every seed has the same mix).

    Small lesions follow a golden-ratio sequence, which hits ``small_fraction`` closely for any n.
    """
    if index in empty_case_indices(n_cases, mix.n_empty):
        return LesionKind.NONE
    if ((index + 0.5) * _GOLDEN_FRACTION) % 1.0 < mix.small_fraction:
        return LesionKind.SMALL
    return LesionKind.LARGE


@dataclass(frozen=True)
class OcclusionPlan:
    """Hidden per-case factors of one occlusion."""

    kind: LesionKind
    side: int  # +1: left hemisphere, -1: right
    origin_mm: tuple[float, float, float]
    axis: tuple[float, float, float]
    half_angle_deg: float
    collateral: float  # 0 poor .. 1 good
    reperfusion: float  # 0 none .. 1 complete


def _unit(vector: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(x) for x in vector / np.linalg.norm(vector))


def plan_occlusion(kind: LesionKind, rng: np.random.Generator, mix: LesionMix) -> OcclusionPlan | None:
    """Draw the hidden factors of a case's occlusion; ``None`` for a case without a lesion."""
    if kind is LesionKind.NONE:
        return None
    side = int(rng.choice((-1, 1)))
    # Middle-cerebral-like: from near the carotid terminus, fanning laterally and upwards.
    origin = np.array([side * rng.uniform(14.0, 20.0), rng.uniform(0.0, 12.0), rng.uniform(-22.0, -12.0)])
    axis = np.array([float(side), rng.uniform(-0.45, 0.35), rng.uniform(0.15, 0.6)])
    half_angle = rng.uniform(*mix.large_half_angle_deg)
    if kind is LesionKind.SMALL:
        # A distal branch: start part of the way out and turn the branch somewhat.
        origin = origin + rng.uniform(8.0, 18.0) * np.array(_unit(axis))
        axis = axis + np.array([0.0, rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.5)])
        half_angle = rng.uniform(*mix.small_half_angle_deg)
    return OcclusionPlan(
        kind=kind,
        side=side,
        origin_mm=tuple(float(x) for x in origin),
        axis=_unit(axis),
        half_angle_deg=float(half_angle),
        collateral=float(rng.uniform(0.0, 1.0)),
        reperfusion=float(rng.beta(*mix.reperfusion_beta)),
    )


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class IschemiaFields:
    """Coarse (:class:`FieldGrid`) fields describing the ischaemia's effect on every modality.

    Applied by the caller to intracranial tissue only: multiplicative CBF and CBV factors, additive
    Tmax delay (s) and NCCT hypodensity (HU), and ``infarct_margin`` (> 0 inside the final infarct).
    """

    cbf_factor: np.ndarray
    cbv_factor: np.ndarray
    tmax_delay_s: np.ndarray
    ncct_change_hu: np.ndarray
    infarct_margin: np.ndarray

    @classmethod
    def healthy(cls, grid: FieldGrid) -> IschemiaFields:
        ones = np.ones(grid.shape, dtype=np.float32)
        zeros = np.zeros(grid.shape, dtype=np.float32)
        return cls(ones, ones, zeros, zeros, zeros - 1.0)


def territory_coordinate(plan: OcclusionPlan, grid: FieldGrid) -> np.ndarray:
    """Angle from the territory axis over the half-angle: 0 on the axis, 1 at the territory edge."""
    lr, ap, si = grid.axes()
    offsets = (lr - plan.origin_mm[0], ap - plan.origin_mm[1], si - plan.origin_mm[2])
    along = sum(o * a for o, a in zip(offsets, plan.axis, strict=True))
    distance = np.sqrt(sum(o**2 for o in offsets)) + np.float32(1e-3)
    angle = np.arccos(np.clip(along / distance, -1.0, 1.0))
    return (angle / np.deg2rad(plan.half_angle_deg)).astype(np.float32)


def ischemia_fields(plan: OcclusionPlan | None, grid: FieldGrid, rng: np.random.Generator) -> IschemiaFields:
    """Perfusion deficit, arrival delay and final infarct of one occlusion on the coarse grid."""
    if plan is None:
        return IschemiaFields.healthy(grid)
    lr = grid.axes()[0]
    # Smooth ramp across the midline (3..6 mm lateral): nothing crosses to the other hemisphere.
    hemisphere = np.clip((plan.side * lr - 3.0) / 3.0, 0.0, 1.0).astype(np.float32)
    territory = territory_coordinate(plan, grid) + 0.15 * grid.smooth_noise(rng, correlation_mm=10.0)

    core_profile = np.clip(1.0 - territory, 0.0, 1.0) ** 0.5
    flow_deficit = core_profile * (1.0 - 0.25 * plan.collateral) + 0.06 * grid.smooth_noise(rng, 6.0)
    flow_deficit = np.clip(flow_deficit, 0.0, 1.0) * hemisphere

    oligaemia = np.clip((1.15 - territory) / 0.3, 0.0, 1.0) * hemisphere
    tmax_delay = (3.2 + 2.5 * plan.collateral) * oligaemia + 11.0 * flow_deficit

    cbf_factor = 1.0 - 0.9 * _smoothstep(0.1, 1.0, flow_deficit)
    # Penumbral autoregulation dilates vessels (CBV up, more with good collaterals); the core collapses.
    penumbral_bump = 4.0 * flow_deficit * (1.0 - flow_deficit)
    cbv_factor = (
        1.0 + (0.1 + 0.3 * plan.collateral) * penumbral_bump - 0.65 * _smoothstep(0.45, 0.9, flow_deficit)
    )
    ncct_change = -4.0 * _smoothstep(0.7, 1.0, flow_deficit)

    tau = 0.25 + 0.45 * plan.reperfusion
    infarct_margin = flow_deficit - tau + 0.08 * grid.smooth_noise(rng, 8.0)
    infarct_margin = np.where(hemisphere > 0, infarct_margin, -1.0)
    as32 = [np.asarray(a, dtype=np.float32) for a in (cbf_factor, cbv_factor, tmax_delay, ncct_change)]
    return IschemiaFields(*as32, infarct_margin=infarct_margin.astype(np.float32))
