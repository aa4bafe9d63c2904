"""Incompatible settings fail before a run does any work, naming the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tiny_case

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models import IncompatibleImageSizeError
from isles_diffseg.preflight import check_slicing_settings, training_blocks
from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config

CONF = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}


def _params(image_size: int, model: str = "medsegdiff_tiny_cpu", baseline: str = "unet_baseline_tiny_cpu") -> dict:
    return {"slicing": {"image_size": image_size}, "training": {"model": model},
            "unet_baseline": {"training": {"model": baseline}}, "variants": VARIANTS}


def test_every_training_block_is_checked_including_namespaced_ones():
    assert set(training_blocks(_params(64))) == {"training", "unet_baseline.training"}
    check_slicing_settings(_params(64))
    with pytest.raises(IncompatibleImageSizeError, match=r"slicing\.image_size=62 does not suit training\.model="):
        check_slicing_settings(_params(62))
    # the diffusion model takes any size here (no downsampling), the UNet baseline still halves twice
    with pytest.raises(IncompatibleImageSizeError,
                       match=r"slicing\.image_size=62 does not suit unet_baseline\.training\.model='unet_baseline"
                             r"_tiny_cpu'.*or set unet_baseline\.training\.model"):
        check_slicing_settings(_params(62, model="medsegdiff_32_1l_8c_2x2a_128t_1btl_debug"))


def test_training_refuses_a_slice_store_size_the_model_cannot_take():
    training = {"model": "medsegdiff_tiny_cpu", "loss": "mse_with_aux_demo", "optimizer": "adamw_1e3lr_wd1e4",
                "scheduler": "warmup_cosine_10pct", "augmentation": "none", "diffusion": "ddim10",
                "recipe": "train_test_tiny", "run_name": "t"}
    with pytest.raises(IncompatibleImageSizeError, match=r"slicing\.image_size=63 .*re-run slicing"):
        resolve_run_config(training, VARIANTS, image_channels=2, image_size=63)


@pytest.mark.slow
def test_data_processing_with_an_image_size_the_model_cannot_take_stops_before_ingesting(project_copy):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    release = project_copy / "release"
    write_tiny_case(release, 1)
    bootstrap_project(project_copy)
    params = {"data": {"root": str(release)}, "slicing": {"image_size": 63}}
    with (KedroSession.create(project_path=project_copy, runtime_params=params) as session,
          pytest.raises(IncompatibleImageSizeError, match=r"slicing\.image_size=63 does not suit training\.model")):
        session.run(pipeline_names=["data_processing"])  # the hook in settings.HOOKS stops it
    assert not (project_copy / "data/02_intermediate/cases").exists()
    assert not list((project_copy / "data/03_primary").iterdir())
