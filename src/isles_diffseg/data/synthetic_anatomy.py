"""Synthetic head anatomy: case grids, smooth random fields and tissue labels.

Everything lives in a head-centred anatomical frame in millimetres: ``lr`` grows towards the
patient's left, ``ap`` towards anterior, ``si`` towards superior, with the head centre at 0. A
case grid only says where its voxel centres sit in that frame, so one head looks the same on the
demo grid (2 x 2 x 6 mm) and on the realistic one (0.41 x 0.41 x 2 mm), and flipping a storage
axis is just reversing a coordinate vector.

Smooth structure (head-shape bumps, sulcal pattern, bias fields, lesion fields) is drawn on a
coarse isotropic :class:`FieldGrid` and interpolated linearly onto the case grid one axis at a
time, which costs a few passes over the full volume instead of a Gaussian filter at full size.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


class Tissue(enum.IntEnum):
    """Tissue classes of the synthetic head, stored as uint8 labels."""

    AIR = 0
    SCALP = 1
    SKULL = 2
    CSF = 3
    GREY_MATTER = 4
    WHITE_MATTER = 5


Axes = tuple[np.ndarray, np.ndarray, np.ndarray]


def broadcast_axes(lr: np.ndarray, ap: np.ndarray, si: np.ndarray) -> Axes:
    """1D coordinate vectors reshaped to broadcast into a 3D (lr, ap, si) volume."""
    return lr[:, None, None], ap[None, :, None], si[None, None, :]


@dataclass(frozen=True)
class HeadGrid:
    """Voxel-centre coordinates (mm, head frame) of a case grid, in storage order.

    Each vector is monotonic; a decreasing one means that storage axis runs the other way
    (e.g. ``ap`` decreasing = the LPS habit of CT, index grows towards posterior).
    """

    lr: np.ndarray
    ap: np.ndarray
    si: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.lr.size, self.ap.size, self.si.size)

    @property
    def vectors(self) -> Axes:
        return (self.lr, self.ap, self.si)

    @property
    def steps_mm(self) -> tuple[float, float, float]:
        """Signed coordinate step per voxel along each storage axis."""
        return tuple(float(v[1] - v[0]) for v in self.vectors)

    def axes(self) -> Axes:
        return broadcast_axes(*self.vectors)


def _linear_neighbours(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-neighbour index and right weight of each target coordinate on a regular increasing axis."""
    position = np.clip((target - source[0]) / (source[1] - source[0]), 0.0, source.size - 1.0)
    left = np.minimum(np.floor(position).astype(np.intp), source.size - 2)
    return left, (position - left).astype(np.float32)


def _interpolate_axis(values: np.ndarray, axis: int, left: np.ndarray, weight: np.ndarray) -> np.ndarray:
    shape = [1] * values.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    out = np.take(values, left, axis=axis)
    out *= 1.0 - weight
    out += np.take(values, left + 1, axis=axis) * weight
    return out


def resample_linear(values: np.ndarray, source: Axes, target: Axes) -> np.ndarray:
    """Trilinear resampling of a volume on regular increasing ``source`` axes at ``target`` coordinates.

    Separable: the last axis is done first while the array is still coarse, so only the final pass
    (along axis 0) touches the full output size. Target vectors may run in either direction.
    """
    out = values.astype(np.float32, copy=False)
    for axis in (2, 1, 0):
        left, weight = _linear_neighbours(source[axis], target[axis])
        out = _interpolate_axis(out, axis, left, weight)
    return out


def _centred_axis(half_extent_mm: float, spacing_mm: float) -> np.ndarray:
    n = 2 * math.ceil(half_extent_mm / spacing_mm) + 2
    return ((np.arange(n) - (n - 1) / 2) * spacing_mm).astype(np.float32)


@dataclass(frozen=True)
class FieldGrid:
    """Coarse isotropic grid, symmetric about the head centre, on which smooth fields are drawn.

    Symmetry about ``lr = 0`` makes ``field[::-1]`` the left-right mirror image of a field.
    """

    lr: np.ndarray
    ap: np.ndarray
    si: np.ndarray
    spacing_mm: float

    @classmethod
    def covering(cls, grid: HeadGrid, spacing_mm: float) -> FieldGrid:
        """The coarse grid that covers every voxel centre of ``grid`` (one cell of margin)."""
        halves = [float(np.abs(v).max()) + spacing_mm for v in grid.vectors]
        return cls(*(_centred_axis(h, spacing_mm) for h in halves), spacing_mm=spacing_mm)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.lr.size, self.ap.size, self.si.size)

    @property
    def vectors(self) -> Axes:
        return (self.lr, self.ap, self.si)

    def axes(self) -> Axes:
        return broadcast_axes(*self.vectors)

    def smooth_noise(self, rng: np.random.Generator, correlation_mm: float) -> np.ndarray:
        """Zero-mean, unit-variance Gaussian random field; Gaussian kernel sigma = ``correlation_mm``.

        Long correlations are drawn on a grid of about sigma / 3 spacing (never finer than this grid)
        and interpolated here, so a 40 mm bias field costs no more than a 4 mm sulcal one.
        """
        draw_spacing = max(self.spacing_mm, correlation_mm / 3.0)
        coarser = draw_spacing > self.spacing_mm
        draw_axes = (
            tuple(_centred_axis(float(v[-1]), draw_spacing) for v in self.vectors)
            if coarser
            else self.vectors
        )
        white = rng.standard_normal(tuple(a.size for a in draw_axes)).astype(np.float32)
        field = ndimage.gaussian_filter(white, sigma=correlation_mm / draw_spacing, mode="reflect")
        field -= field.mean()
        field /= max(float(field.std()), 1e-12)
        if coarser:
            field = resample_linear(field, draw_axes, self.vectors)
        return field

    def to_grid(self, values: np.ndarray, grid: HeadGrid) -> np.ndarray:
        """A coarse field sampled (trilinearly) at the voxel centres of ``grid``, float32."""
        return resample_linear(values, self.vectors, grid.vectors)


@dataclass(frozen=True)
class HeadShape:
    """Per-case anatomical sizes in mm (hidden generation factors, never written)."""

    semi_axes_mm: tuple[float, float, float]
    scalp_mm: float
    skull_mm: float
    subarachnoid_mm: float
    cortex_mm: float
    sulcal_depth_mm: float
    ventricle_scale: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> HeadShape:
        """Adult head sizes; ``ventricle_scale`` > 1 mimics the atrophy of an older stroke cohort."""
        return cls(
            semi_axes_mm=(rng.uniform(68.0, 76.0), rng.uniform(86.0, 94.0), rng.uniform(84.0, 94.0)),
            scalp_mm=rng.uniform(4.0, 6.0),
            skull_mm=rng.uniform(5.0, 7.5),
            subarachnoid_mm=rng.uniform(1.5, 3.5),
            cortex_mm=rng.uniform(2.4, 3.2),
            sulcal_depth_mm=rng.uniform(9.0, 14.0),
            ventricle_scale=rng.uniform(0.8, 1.4),
        )


def _depth_below_surface(
    grid: HeadGrid, fields: FieldGrid, shape: HeadShape, rng: np.random.Generator
) -> np.ndarray:
    """Approximate depth (mm) below the outer head surface, negative outside the head.

    Measured along the ray from the head centre to an ellipsoid whose radius is bumped by a smooth,
    left-right symmetric field: depth = r * (surface_radius / r_ellipsoid_units - 1).
    """
    lr, ap, si = grid.axes()
    a, b, c = shape.semi_axes_mm
    bumps = fields.smooth_noise(rng, correlation_mm=25.0)
    bumps = 0.5 * (bumps + bumps[::-1])  # heads are nearly symmetric
    bumps *= 0.03 / max(float(bumps.std()), 1e-12)
    bumps += 1.0
    radius = np.sqrt(lr**2 + ap**2 + si**2 + np.float32(1e-6))
    ellipsoid_units = np.sqrt((lr / a) ** 2 + (ap / b) ** 2 + (si / c) ** 2 + np.float32(1e-6 / a**2))
    depth = fields.to_grid(bumps, grid)
    depth /= ellipsoid_units
    depth -= 1.0
    depth *= radius
    return depth


def _paint_ellipsoid(labels: np.ndarray, grid: HeadGrid, centre, semi_axes, tissue: Tissue, only_in) -> None:
    """Set ``tissue`` inside an axis-aligned ellipsoid (head frame), restricted to labels in ``only_in``.

    Works on the bounding block only: deep structures are small next to the whole volume.
    """
    terms = [((v - c) / s) ** 2 for v, c, s in zip(grid.vectors, centre, semi_axes, strict=True)]
    block = []
    for term in terms:
        inside = np.flatnonzero(term < 1.0)
        if inside.size == 0:
            return
        block.append(slice(int(inside[0]), int(inside[-1]) + 1))
    t0, t1, t2 = (t[s] for t, s in zip(terms, block, strict=True))
    ellipsoid = (t0[:, None, None] + t1[None, :, None] + t2[None, None, :]) < 1.0
    view = labels[tuple(block)]
    view[ellipsoid & np.isin(view, list(only_in))] = tissue


def _paint_deep_structures(labels: np.ndarray, grid: HeadGrid, shape: HeadShape) -> None:
    """Basal ganglia and thalami (grey matter), then lateral and third ventricles (CSF)."""
    brain = (Tissue.GREY_MATTER, Tissue.WHITE_MATTER)
    for side in (-1.0, 1.0):
        _paint_ellipsoid(labels, grid, (side * 22.0, 4.0, -2.0), (7.0, 14.0, 9.0), Tissue.GREY_MATTER, brain)
        _paint_ellipsoid(labels, grid, (side * 12.0, 16.0, 8.0), (5.0, 9.0, 8.0), Tissue.GREY_MATTER, brain)
        _paint_ellipsoid(labels, grid, (side * 10.0, -12.0, 2.0), (8.0, 12.0, 8.0), Tissue.GREY_MATTER, brain)
    scale = shape.ventricle_scale
    for side in (-1.0, 1.0):
        centre = (side * (4.0 + 4.0 * scale), -2.0, 14.0)
        _paint_ellipsoid(labels, grid, centre, (4.5 * scale, 26.0, 7.0 * scale), Tissue.CSF, brain)
    _paint_ellipsoid(labels, grid, (0.0, -5.0, 2.0), (1.2 * scale, 12.0, 7.0), Tissue.CSF, brain)


def label_tissues(
    grid: HeadGrid, fields: FieldGrid, shape: HeadShape, rng: np.random.Generator
) -> np.ndarray:
    """uint8 :class:`Tissue` labels of a synthetic head on ``grid``.

    Layers by depth below the head surface: scalp, skull, a subarachnoid CSF layer of varying width,
    then brain. Sulci are the thin zero set of a smooth random field near the brain surface, lined
    with cortex; together with an outer cortical ribbon this gives a folded grey/white boundary.
    """
    depth = _depth_below_surface(grid, fields, shape, rng)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    labels[depth >= 0] = Tissue.SCALP
    labels[depth >= shape.scalp_mm] = Tissue.SKULL
    cranial_inner = shape.scalp_mm + shape.skull_mm
    labels[depth >= cranial_inner] = Tissue.CSF

    widening = fields.smooth_noise(rng, correlation_mm=20.0)
    widening = np.float32(cranial_inner) + shape.subarachnoid_mm * np.exp(0.4 * widening)
    depth -= fields.to_grid(widening, grid)  # now depth below the brain surface
    brain = depth >= 0
    labels[brain] = Tissue.WHITE_MATTER

    # For a field of unit variance smoothed with sigma s, |grad| is about 1.2 / s, so |field| * s / 1.2
    # approximates the distance (mm) to its zero set: the sulcal midline.
    sulcal_sigma = 3.5
    sulcal_distance = np.abs(fields.to_grid(fields.smooth_noise(rng, sulcal_sigma), grid))
    sulcal_distance *= sulcal_sigma / 1.2
    sulcal_half_width = max(0.5, 0.25 * min(abs(s) for s in grid.steps_mm))
    within_sulcal_depth = depth < shape.sulcal_depth_mm
    cortex = brain & (
        (depth < shape.cortex_mm)
        | (within_sulcal_depth & (sulcal_distance < sulcal_half_width + shape.cortex_mm))
    )
    labels[cortex] = Tissue.GREY_MATTER
    labels[brain & within_sulcal_depth & (sulcal_distance < sulcal_half_width)] = Tissue.CSF
    _paint_interhemispheric_fissure(labels, depth, grid, shape, sulcal_half_width)
    _paint_deep_structures(labels, grid, shape)
    return labels


def _paint_interhemispheric_fissure(
    labels: np.ndarray, brain_depth: np.ndarray, grid: HeadGrid, shape: HeadShape, half_width_mm: float
) -> None:
    """Midline CSF cleft lined with cortex: deep above the corpus callosum, shallower below it."""
    columns = np.flatnonzero(np.abs(grid.lr) < half_width_mm + shape.cortex_mm)
    if columns.size == 0:
        return
    block = slice(int(columns.min()), int(columns.max()) + 1)
    distance = np.abs(grid.lr[block])[:, None, None]
    depth = brain_depth[block]
    medial = (depth >= 0) & ((depth < 25.0) | (grid.si > 22.0)[None, None, :])
    view = labels[block]
    view[medial & (distance < half_width_mm + shape.cortex_mm)] = Tissue.GREY_MATTER
    view[medial & (distance < half_width_mm)] = Tissue.CSF
