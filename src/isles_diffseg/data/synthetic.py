"""Seeded synthetic ISLES'24 (v7 layout) dataset: the project's built-in default data.

Each case is a synthetic head (see :mod:`synthetic_anatomy`) with an optional ischaemic lesion (see
:mod:`synthetic_lesion`), rendered as CBF (mL/100 g/min), Tmax (s), CBV (mL/100 g), MTT (s)
and NCCT (HU) on one NCCT-space grid, plus the final-infarct mask, and written as::

    derivatives/sub-strokeNNNN/ses-01/perfusion-maps/sub-strokeNNNN_ses-01_space-ncct_{cbf,tmax,cbv,mtt}.nii.gz
    derivatives/sub-strokeNNNN/ses-02/sub-strokeNNNN_ses-02_space-ncct_lesion-msk.nii.gz
    raw_data/sub-strokeNNNN/ses-01/sub-strokeNNNN_ses-01_ncct.nii.gz

Cases are generated and written one at a time from ``numpy.random.default_rng([seed, index])``, so
a seed fixes every array and memory never holds more than one case. No generation factor (lesion
kind, side, reperfusion, ...) is written anywhere.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from isles_diffseg.data.synthetic_anatomy import FieldGrid, HeadGrid, HeadShape, Tissue, label_tissues
from isles_diffseg.data.synthetic_lesion import (
    IschemiaFields,
    LesionMix,
    ischemia_fields,
    lesion_kind_for,
    plan_occlusion,
)

PERFUSION_MAPS = ("cbf", "tmax", "cbv", "mtt")
MASK_KEY = "lesion_msk"
NCCT_KEY = "ncct"
CASE_FOLDER = re.compile(r"^sub-stroke\d{4}$")
_PLAN_ATTEMPTS = 10

# Storage orientations cycled over cases (nibabel axis codes: the direction each index grows
# towards). LPS is what ITK-based DICOM converters write for CT; the others exercise reorientation.
ORIENTATION_CYCLE = ("LPS", "LPS", "RAS", "LPS", "LAS", "LPI")


@dataclass(frozen=True)
class SyntheticProfile:
    """Grid size and spacing of the cases of one profile; ranges are inclusive (low, high)."""

    n_cases: int
    shape_x: int
    shape_y: tuple[int, int]
    n_slices: tuple[int, int]
    spacing_xy_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    field_spacing_mm: float = 2.0

    @classmethod
    def from_mapping(cls, values: Mapping) -> SyntheticProfile:
        """Build from a parameters mapping; scalars for ranges mean a fixed value."""
        values = dict(values)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown profile settings {sorted(unknown)}; expected some of {sorted(known)}")
        ranges = ("shape_y", "n_slices", "spacing_xy_mm", "slice_mm")
        for key in ranges:
            if key in values and not isinstance(values[key], list | tuple):
                values[key] = (values[key], values[key])
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


BUILTIN_PROFILES: dict[str, SyntheticProfile] = {
    # Same physical head on a coarse grid: a full CPU pipeline runs in minutes.
    "demo": SyntheticProfile(
        n_cases=16,
        shape_x=96,
        shape_y=(112, 112),
        n_slices=(24, 24),
        spacing_xy_mm=(1.95, 2.05),
        slice_mm=(6.0, 6.0),
    ),
    # Like the real release: 512 x 512..633 x 64..101 voxels at about 0.41 x 0.41 x 2 mm.
    "realistic": SyntheticProfile(
        n_cases=10,
        shape_x=512,
        shape_y=(512, 633),
        n_slices=(64, 101),
        spacing_xy_mm=(0.40, 0.45),
        slice_mm=(2.0, 2.0),
    ),
}


@dataclass
class SyntheticCase:
    """One generated case in storage order. ``tissue`` is kept for inspection and is never written."""

    case_id: str
    affine: np.ndarray
    maps: dict[str, np.ndarray]  # cbf, tmax, cbv, mtt: float32, NaN outside the head
    ncct: np.ndarray  # int16 HU
    lesion_mask: np.ndarray  # uint8 0/1
    tissue: np.ndarray  # uint8 Tissue labels
    mask_as_scaled_uint16: bool = False

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def case_id_for(index: int, first_case_id: int = 1) -> str:
    return f"sub-stroke{first_case_id + index:04d}"


def case_paths(root: str | Path, case_id: str) -> dict[str, Path]:
    """Where each file of a case goes, keyed by modality (``cbf`` ... ``mtt``, ``ncct``, ``lesion_msk``)."""
    root = Path(root)
    perfusion = root / "derivatives" / case_id / "ses-01" / "perfusion-maps"
    paths = {m: perfusion / f"{case_id}_ses-01_space-ncct_{m}.nii.gz" for m in PERFUSION_MAPS}
    paths[NCCT_KEY] = root / "raw_data" / case_id / "ses-01" / f"{case_id}_ses-01_ncct.nii.gz"
    paths[MASK_KEY] = (
        root / "derivatives" / case_id / "ses-02" / f"{case_id}_ses-02_space-ncct_lesion-msk.nii.gz"
    )
    return paths


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Rotation about the world z axis (head yaw) after one about x (gantry tilt)."""
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    about_z = np.array([[np.cos(y), -np.sin(y), 0.0], [np.sin(y), np.cos(y), 0.0], [0.0, 0.0, 1.0]])
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(p), -np.sin(p)], [0.0, np.sin(p), np.cos(p)]])
    return about_z @ about_x


def sample_grid(
    index: int, profile: SyntheticProfile, head: HeadShape, rng: np.random.Generator
) -> tuple[HeadGrid, np.ndarray]:
    """A case grid (head-frame voxel coordinates in storage order) and its NIfTI (RAS world) affine.

    The head sits off-centre by a few mm with its vertex just below the top slice; storage axes
    follow :data:`ORIENTATION_CYCLE`; the affine adds a small head yaw and gantry tilt.
    """
    nx = profile.shape_x
    ny = int(rng.integers(profile.shape_y[0], profile.shape_y[1] + 1))
    nz = int(rng.integers(profile.n_slices[0], profile.n_slices[1] + 1))
    in_plane = rng.uniform(*profile.spacing_xy_mm)
    through_plane = rng.uniform(*profile.slice_mm)
    centred = [(np.arange(n) - (n - 1) / 2.0) for n in (nx, ny, nz)]
    vertex_gap = rng.uniform(4.0, 14.0)
    head_centre_si = (nz - 1) / 2.0 * through_plane - vertex_gap - head.semi_axes_mm[2]
    lr = centred[0] * in_plane - rng.uniform(-4.0, 4.0)
    ap = centred[1] * in_plane - rng.uniform(-6.0, 6.0)
    si = centred[2] * through_plane - head_centre_si
    orientation = ORIENTATION_CYCLE[index % len(ORIENTATION_CYCLE)]
    lr = lr if orientation[0] == "L" else lr[::-1]
    ap = ap if orientation[1] == "A" else ap[::-1]
    si = si if orientation[2] == "S" else si[::-1]
    grid = HeadGrid(*(np.ascontiguousarray(v, dtype=np.float32) for v in (lr, ap, si)))

    # Head frame -> RAS world: x = -lr (right is +x), y = ap, z = si; then rotate and place.
    rotation = _rotation(rng.uniform(-2.0, 2.0), rng.uniform(-4.0, 4.0))
    head_centre_world = np.array(
        [rng.uniform(-5.0, 5.0), rng.uniform(-25.0, 25.0), rng.uniform(-180.0, -60.0)]
    )
    to_ras = np.diag([-1.0, 1.0, 1.0])
    steps = np.diag([float(lr[1] - lr[0]), float(ap[1] - ap[0]), float(si[1] - si[0])])
    first_voxel = np.array([lr[0], ap[0], si[0]], dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ to_ras @ steps
    affine[:3, 3] = rotation @ to_ras @ first_voxel + head_centre_world
    return grid, affine


# Healthy values per tissue, indexed by Tissue. Grey/white values follow typical CTP figures
# (CBF GM ~55, WM ~22 mL/100 g/min; CBV GM ~4, WM ~2 mL/100 g); Tmax in s; MTT for tissues where
# CBV/CBF is meaningless (MTT of parenchyma follows the central volume theorem, 60 * CBV / CBF).
_HEALTHY_CBF = np.array([0.0, 6.0, 1.0, 2.5, 56.0, 23.0], dtype=np.float32)
_HEALTHY_CBV = np.array([0.0, 0.8, 0.2, 0.3, 4.0, 1.9], dtype=np.float32)
_HEALTHY_TMAX = np.array([0.0, 1.2, 0.3, 1.5, 0.6, 1.2], dtype=np.float32)
_TMAX_NOISE_SD = np.array([0.0, 0.5, 0.3, 1.1, 0.3, 0.3], dtype=np.float32)
_OTHER_MTT = np.array([0.0, 5.0, 2.0, 3.0, 0.0, 0.0], dtype=np.float32)
_HU = np.array([-1000.0, 35.0, 1100.0, 6.0, 38.0, 28.0], dtype=np.float32)
_HU_NOISE_SD = np.array([8.0, 6.0, 40.0, 4.0, 4.0, 4.0], dtype=np.float32)
_HU_FIELD_AMPLITUDE = np.array([0.0, 8.0, 300.0, 1.0, 2.0, 2.0], dtype=np.float32)


def _white_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float | np.ndarray) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= scale
    return noise


def _scaled_flow(
    healthy: np.ndarray,
    tissue: np.ndarray,
    intracranial: np.ndarray,
    factor_coarse: np.ndarray,
    fields_grid: FieldGrid,
    grid: HeadGrid,
    rng: np.random.Generator,
) -> np.ndarray:
    """Healthy values x (coarse bias, texture and ischaemia factor, intracranial only) x white noise."""
    values = fields_grid.to_grid(factor_coarse, grid)
    values[~intracranial] = 1.0
    values *= healthy[tissue]
    values *= 1.0 + _white_noise(rng, values.shape, 0.05)
    np.maximum(values, 0.0, out=values)
    return values


def render_perfusion(
    tissue: np.ndarray,
    grid: HeadGrid,
    fields_grid: FieldGrid,
    ischemia: IschemiaFields,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """CBF, Tmax, CBV and MTT maps (float32, NaN in air) of a labelled head with its ischaemia."""
    intracranial = tissue >= Tissue.CSF
    parenchyma = tissue >= Tissue.GREY_MATTER
    # An arterial-input scale error and smooth deconvolution drift scale CBF and CBV alike, so
    # they are shared (MTT = CBV / CBF stays near normal); each map has its own fine texture.
    global_scale = float(np.clip(rng.normal(1.0, 0.1), 0.75, 1.25))
    bias = global_scale * np.exp(0.07 * fields_grid.smooth_noise(rng, 40.0))

    def texture(amplitude: float) -> np.ndarray:
        return 1.0 + amplitude * fields_grid.smooth_noise(rng, 3.0)

    cbf_coarse = bias * texture(0.08) * ischemia.cbf_factor
    cbf = _scaled_flow(_HEALTHY_CBF, tissue, intracranial, cbf_coarse, fields_grid, grid, rng)
    cbv_coarse = bias * texture(0.08) * ischemia.cbv_factor
    cbv = _scaled_flow(_HEALTHY_CBV, tissue, intracranial, cbv_coarse, fields_grid, grid, rng)

    tmax = fields_grid.to_grid(ischemia.tmax_delay_s + 0.3 * fields_grid.smooth_noise(rng, 4.0), grid)
    tmax[~intracranial] = 0.0
    tmax += _HEALTHY_TMAX[tissue]
    tmax += _white_noise(rng, tmax.shape, _TMAX_NOISE_SD[tissue])
    np.clip(tmax, 0.0, 30.0, out=tmax)

    mtt = np.divide(60.0 * cbv, np.maximum(cbf, 0.5))
    mtt *= 1.0 + _white_noise(rng, mtt.shape, 0.04)
    other = ~parenchyma
    mtt[other] = _OTHER_MTT[tissue[other]] * (
        1.0 + 0.2 * rng.standard_normal(int(other.sum()), dtype=np.float32)
    )
    np.clip(mtt, 0.0, 30.0, out=mtt)

    maps = {"cbf": cbf, "tmax": tmax, "cbv": cbv, "mtt": mtt}
    air = tissue == Tissue.AIR
    for values in maps.values():
        values[air] = np.nan
    return maps


def render_ncct(
    tissue: np.ndarray,
    grid: HeadGrid,
    fields_grid: FieldGrid,
    ischemia: IschemiaFields,
    rng: np.random.Generator,
) -> np.ndarray:
    """NCCT in HU (int16): tissue densities, diploe/bias variation, noise, early ischaemic hypodensity."""
    hu = fields_grid.to_grid(fields_grid.smooth_noise(rng, 8.0), grid)
    hu *= _HU_FIELD_AMPLITUDE[tissue]
    hu += _HU[tissue]
    hu += _white_noise(rng, hu.shape, _HU_NOISE_SD[tissue])
    if np.any(ischemia.ncct_change_hu):
        change = fields_grid.to_grid(ischemia.ncct_change_hu, grid)
        change[tissue < Tissue.GREY_MATTER] = 0.0
        hu += change
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def final_infarct(
    tissue: np.ndarray, grid: HeadGrid, fields_grid: FieldGrid, ischemia: IschemiaFields, side: int | None
) -> np.ndarray:
    """uint8 final-infarct mask: positive infarct margin, in parenchyma, strictly on the lesion side."""
    if side is None:
        return np.zeros(tissue.shape, dtype=np.uint8)
    lesion = fields_grid.to_grid(ischemia.infarct_margin, grid) > 0
    lesion &= tissue >= Tissue.GREY_MATTER
    lesion &= (side * grid.lr > 3.0)[:, None, None]
    return lesion.astype(np.uint8)


def generate_case(
    index: int,
    profile: SyntheticProfile,
    rng: np.random.Generator,
    *,
    n_cases: int | None = None,
    lesion_mix: LesionMix | None = None,
    first_case_id: int = 1,
    mask_as_scaled_uint16: bool = False,
) -> SyntheticCase:
    """Generate case ``index`` of a dataset of ``n_cases`` (default: the profile's) from ``rng``.

    The lesion kind (none/small/large) depends only on ``index``, ``n_cases`` and ``lesion_mix``.
    """
    n_cases = profile.n_cases if n_cases is None else n_cases
    lesion_mix = lesion_mix or LesionMix()
    head = HeadShape.sample(rng)
    grid, affine = sample_grid(index, profile, head, rng)
    fields_grid = FieldGrid.covering(grid, profile.field_spacing_mm)
    tissue = label_tissues(grid, fields_grid, head, rng)
    kind = lesion_kind_for(index, n_cases, lesion_mix)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    # A territory can miss the parenchyma (e.g. a branch running out of the slab): redraw it, so
    # that every lesion case really has a lesion. Deterministic: the redraws come from the same rng.
    for _ in range(_PLAN_ATTEMPTS):
        plan = plan_occlusion(kind, rng, lesion_mix)
        ischemia = ischemia_fields(plan, fields_grid, rng)
        mask = final_infarct(tissue, grid, fields_grid, ischemia, None if plan is None else plan.side)
        if plan is None or mask.sum() * voxel_ml >= lesion_mix.min_lesion_ml:
            break
    return SyntheticCase(
        case_id=case_id_for(index, first_case_id),
        affine=affine,
        maps=render_perfusion(tissue, grid, fields_grid, ischemia, rng),
        ncct=render_ncct(tissue, grid, fields_grid, ischemia, rng),
        lesion_mask=mask,
        tissue=tissue,
        mask_as_scaled_uint16=mask_as_scaled_uint16,
    )


def _nifti(data: np.ndarray, affine: np.ndarray, on_disk_dtype: type) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, affine)
    image.set_data_dtype(on_disk_dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def write_case(case: SyntheticCase, root: str | Path, *, threads: int = 2) -> dict[str, Path]:
    """Write one case under ``root`` (gzip NIfTI); returns its paths keyed by modality.

    The scaled-uint16 mask is the float 0/1 mask saved as uint16, for which nibabel picks
    scl_slope = 1/65535 (1.5259e-05) and raw 65535, exactly as in the real case 0158.
    Files are compressed in parallel threads (zlib releases the GIL).
    """
    paths = case_paths(root, case.case_id)
    images = {name: _nifti(values, case.affine, np.float32) for name, values in case.maps.items()}
    images[NCCT_KEY] = _nifti(case.ncct, case.affine, np.int16)
    if case.mask_as_scaled_uint16:
        images[MASK_KEY] = _nifti(case.lesion_mask.astype(np.float32), case.affine, np.uint16)
    else:
        images[MASK_KEY] = _nifti(case.lesion_mask, case.affine, np.uint8)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(lambda name: nib.save(images[name], str(paths[name])), list(images)))
    return paths


def resolve_profile(
    profile: str | Mapping | SyntheticProfile, profiles: Mapping[str, Mapping] | None = None
) -> SyntheticProfile:
    """A profile by name (from ``profiles``, else the built-ins), from a mapping, or as given."""
    if isinstance(profile, SyntheticProfile):
        return profile
    if isinstance(profile, Mapping):
        return SyntheticProfile.from_mapping(profile)
    if profiles and profile in profiles:
        return SyntheticProfile.from_mapping(profiles[profile])
    if profile in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[profile]
    available = sorted(set(profiles or {}) | set(BUILTIN_PROFILES))
    raise ValueError(f"unknown synthetic profile {profile!r}; available: {available}")


def _clear_case_folders(root: Path) -> None:
    """Remove ``sub-strokeNNNN`` folders a previous run left (only those: nothing else is touched)."""
    for tree in ("derivatives", "raw_data"):
        folder = root / tree
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and CASE_FOLDER.match(child.name):
                    shutil.rmtree(child)


def write_synthetic_dataset(
    root: str | Path,
    *,
    profile: str | Mapping | SyntheticProfile = "demo",
    seed: int = 2024,
    n_cases: int | None = None,
    first_case_id: int = 1,
    profiles: Mapping[str, Mapping] | None = None,
    lesions: Mapping | LesionMix | None = None,
    scaled_mask_index: int | None = 1,
    overwrite: bool = True,
) -> list[dict[str, Any]]:
    """Generate and write a synthetic dataset, one case at a time; returns one summary per case.

    Args mirror the ``synthetic:`` parameters block (``output_root`` is ``root``). Case ``index``
    uses ``default_rng([seed, index])``. ``scaled_mask_index`` names the case whose mask is stored
    as scaled uint16 (``None``: none). With ``overwrite`` every existing ``sub-strokeNNNN`` folder
    under ``root`` is removed first, so no stale case survives a smaller rerun; without it, an
    existing case folder is an error.

    Each summary: ``case_id``, ``paths`` (modality -> path relative to ``root``, POSIX), ``shape``,
    ``spacing_mm``, ``axcodes``, ``lesion_voxels`` and ``lesion_ml``.
    """
    root = Path(root)
    chosen = resolve_profile(profile, profiles)
    n_cases = chosen.n_cases if n_cases is None else int(n_cases)
    mix = lesions if isinstance(lesions, LesionMix) else LesionMix.from_mapping(lesions)
    case_ids = [case_id_for(i, first_case_id) for i in range(n_cases)]
    if overwrite:
        _clear_case_folders(root)
    else:
        clashes = [
            c for c in case_ids if (root / "derivatives" / c).exists() or (root / "raw_data" / c).exists()
        ]
        if clashes:
            raise FileExistsError(
                f"{len(clashes)} case folders already exist under {root} (e.g. {clashes[0]})"
            )

    summaries = []
    for index in range(n_cases):
        case = generate_case(
            index,
            chosen,
            np.random.default_rng([seed, index]),
            n_cases=n_cases,
            lesion_mix=mix,
            first_case_id=first_case_id,
            mask_as_scaled_uint16=index == scaled_mask_index,
        )
        paths = write_case(case, root)
        lesion_voxels = int(case.lesion_mask.sum())
        summaries.append(
            {
                "case_id": case.case_id,
                "paths": {k: p.relative_to(root).as_posix() for k, p in paths.items()},
                "shape": list(case.lesion_mask.shape),
                "spacing_mm": [round(s, 4) for s in case.spacing_mm],
                "axcodes": "".join(nib.aff2axcodes(case.affine)),
                "lesion_voxels": lesion_voxels,
                "lesion_ml": round(lesion_voxels * math.prod(case.spacing_mm) / 1000.0, 3),
            }
        )
        del case  # one case in memory at a time
    return summaries


def write_from_parameters(parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run :func:`write_synthetic_dataset` from the ``synthetic:`` parameters block as a whole."""
    arguments = dict(parameters)
    root = arguments.pop("output_root")
    return write_synthetic_dataset(root, **arguments)
