"""Shared fixtures: tiny ISLES'24-layout cases written on the fly."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

# A non-RAS (LPS-like) affine with anisotropic voxels, as in the real release.
LPS_AFFINE = np.array([[-0.8, 0, 0, 90.0], [0, -0.8, 0, 100.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1]])


def _save(array: np.ndarray, path: Path, affine: np.ndarray, dtype=np.float32, slope: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array.astype(dtype), affine)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, str(path))


def tiny_maps(shape=(20, 24, 6), seed: int = 0) -> dict[str, np.ndarray]:
    """Head-shaped perfusion maps with NaN outside, a lesion in one corner of the brain."""
    rng = np.random.default_rng(seed)
    x, y, _ = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (x**2 + y**2) < 0.8
    lesion = head & (x > 0.2) & (y > 0.1)
    cbf = np.where(head, 50 + rng.normal(0, 2, shape), np.nan)
    cbf[lesion] = 8
    tmax = np.where(head, 1 + rng.random(shape), np.nan)
    tmax[lesion] = 12
    return {
        "cbf": cbf,
        "tmax": tmax,
        "cbv": np.where(head, 4.0, np.nan),
        "mtt": np.where(head, 5.0, np.nan),
        "ncct": np.where(head, 35.0, -1000.0),
        "mask": lesion.astype(np.uint8),
    }


def write_tiny_case(
    root: Path,
    number: int = 1,
    *,
    case_prefix: str = "sub-stroke",
    raw_dir: str = "raw_data",
    ses: tuple[str, str] = ("ses-01", "ses-02"),
    ext: str = ".nii.gz",
    mask_label: str = "space-ncct_lesion-msk",
    shape=(20, 24, 6),
    affine: np.ndarray = LPS_AFFINE,
    mask_as_scaled_uint16: bool = False,
    modalities=("cbf", "tmax", "cbv", "mtt"),
    seed: int = 0,
) -> dict[str, Path]:
    case = f"{case_prefix}{number:04d}"
    maps = tiny_maps(shape, seed)
    paths: dict[str, Path] = {}
    perf = root / "derivatives" / case / ses[0] / "perfusion-maps"
    for m in modalities:
        paths[m] = perf / f"{case}_{ses[0]}_space-ncct_{m}{ext}"
        _save(maps[m], paths[m], affine)
    paths["ncct"] = root / raw_dir / case / ses[0] / f"{case}_{ses[0]}_ncct{ext}"
    _save(maps["ncct"], paths["ncct"], affine, dtype=np.int16)
    paths["mask"] = root / "derivatives" / case / ses[1] / f"{case}_{ses[1]}_{mask_label}{ext}"
    if mask_as_scaled_uint16:
        # Like real case 0158: raw 65535 with scl_slope 1.5259e-05 reads as 1.0.
        _save(maps["mask"].astype(np.uint16) * 65535, paths["mask"], affine, dtype=np.uint16, slope=1.5259e-05)
    else:
        _save(maps["mask"], paths["mask"], affine, dtype=np.uint8)
    paths["_maps"] = maps  # type: ignore[assignment]
    return paths


@pytest.fixture
def write_case() -> Callable[..., dict[str, Path]]:
    """Write one case; keyword options reproduce the naming variants of the real releases."""
    return write_tiny_case


PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """The project's conf/ and pyproject.toml in a scratch folder, so runs never touch data/.

    The package itself comes from the installed (editable) source; MLflow writes to a scratch DB.
    """
    import shutil

    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copytree(PROJECT_ROOT / "conf", copy / "conf", ignore=shutil.ignore_patterns("local"))
    (copy / "conf" / "local").mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", copy / "pyproject.toml")
    (copy / "src").mkdir()  # the package itself is imported from the installed source
    for layer in ("01_raw", "02_intermediate", "03_primary", "05_model_input"):
        (copy / "data" / layer).mkdir(parents=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_LOCATION", str(tmp_path / "mlartifacts"))
    monkeypatch.chdir(copy)
    return copy


def project_parameters(project: Path, runtime_params: dict | None = None, env: str | None = None) -> dict:
    """The parameters a `kedro run` of ``project`` sees: conf/base < conf/local (or conf/<env>) <
    ``runtime_params`` (--params), merged by the project's own config loader."""
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(project / "conf"), runtime_params=runtime_params or {},
                                          env=env, **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]


def run_kedro(project: Path, pipeline: str, runtime_params: dict | None = None) -> None:
    """Run a registered pipeline through a real KedroSession (hooks, kedro-mlflow and all)."""
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project, runtime_params=runtime_params or {}) as session:
            session.run(pipeline_names=[pipeline])
    finally:
        # kedro-mlflow leaves its run active in this process; a CLI run would end it at exit.
        while mlflow.active_run():
            mlflow.end_run()


def build_tiny_slice_store(path: Path, n_cases: int = 6, n_slices: int = 4, size: int = 16, seed: int = 0):
    """A slice store of blob-shaped lesions whose CBF/Tmax channels show them (learnable in a few steps)."""
    import pandas as pd

    from isles_diffseg.data.slice_store import CaseSlices, SliceStoreWriter
    from isles_diffseg.data.slicing import SliceGeometry

    rng = np.random.default_rng(seed)
    writer = SliceStoreWriter(path, n_slices=n_cases * n_slices, channels=2, image_size=size,
                              meta={"modalities": ["cbf", "tmax"], "window_preset": "baseline", "context_slices": 0,
                                    "channel_layout": "slice_major", "mask_interpolation": "rebinarise"})
    yy, xx = np.mgrid[:size, :size]
    case_ids = []
    for c in range(n_cases):
        masks = np.zeros((n_slices, size, size), np.uint8)
        for z in range(n_slices):
            if (c + z) % 3:
                cy, cx, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(2, 4)
                masks[z] = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        images = np.stack([0.6 - 0.4 * masks + 0.05 * rng.random(masks.shape),
                           0.1 + 0.5 * masks + 0.05 * rng.random(masks.shape)], axis=1).astype(np.float32)
        case_id = f"sub-stroke{c + 1:04d}"
        case_ids.append(case_id)
        writer.add(CaseSlices(case_id, images, masks, np.ones_like(masks), SliceGeometry.plan((size, size, n_slices), size)))
    store = writer.close()
    roles = ["train"] * (n_cases - 2) + ["val", "test"]
    folds = pd.DataFrame({"case_id": case_ids, "fold": [i % 3 for i in range(n_cases)], "role": roles,
                          "lesion_volume_ml": [float(i) for i in range(n_cases)]})
    return store, folds
