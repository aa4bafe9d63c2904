"""A tiny slice store and a tiny MedSegDiff with non-trivial weights, shared by the inference tests (imported
by them: the fixtures ``store`` and ``model``, the helper ``sampling``; not a conftest, since a second
``conftest`` module would shadow the one the other tests import from)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.data.slice_store import CaseSlices, SliceStore, SliceStoreWriter
from isles_diffseg.data.slicing import SliceGeometry
from isles_diffseg.inference.predict import SamplerConfig, build_diffusion
from isles_diffseg.models import build_model

CONF = Path(__file__).parents[2] / "conf" / "base"
SIZE = 16
# brain slices per case: case 2 has a slice without brain (never predicted, 0), case 3 none at all
BRAIN = {"sub-stroke0001": [1, 1, 1, 1, 1], "sub-stroke0002": [1, 0, 1, 1, 1], "sub-stroke0003": [0, 0, 0],
         "sub-stroke0004": [1, 1, 1, 1]}


def write_store(path: Path) -> SliceStore:
    rng = np.random.default_rng(0)
    n = sum(len(b) for b in BRAIN.values())
    writer = SliceStoreWriter(path, n_slices=n, channels=2, image_size=SIZE,
                              meta={"modalities": ["cbf", "tmax"], "window_preset": "baseline", "context_slices": 0,
                                    "channel_layout": "slice_major", "mask_interpolation": "rebinarise"})
    for case_id, brain in BRAIN.items():
        z = len(brain)
        masks = (rng.random((z, SIZE, SIZE)) > 0.8).astype(np.uint8)
        images = rng.random((z, 2, SIZE, SIZE)).astype(np.float32)
        brain_mask = np.zeros((z, SIZE, SIZE), np.uint8)
        brain_mask[np.array(brain, bool), 2:-2, 2:-2] = 1
        writer.add(CaseSlices(case_id, images, masks, brain_mask, SliceGeometry.plan((SIZE, SIZE, z), SIZE)))
    return writer.close()


@pytest.fixture(scope="session", name="store")
def store_fixture(tmp_path_factory) -> SliceStore:
    return write_store(tmp_path_factory.mktemp("inference") / "slices")


@pytest.fixture(scope="session", name="model")
def model_fixture() -> torch.nn.Module:
    """Default (not zero) initialisation: the output depends on the input, so wrong batching shows."""
    torch.manual_seed(0)
    config = load_variant_group("model", CONF)["medsegdiff_tiny_cpu"]
    return build_model(config, image_size=SIZE, image_channels=2, init="default").eval()


def sampling(name: str = "ddim10", **override):
    """A diffusion process and a short sampler for it (4 steps unless overridden)."""
    variant = {**load_variant_group("diffusion", CONF)[name], "respacing": 4, **override}
    return build_diffusion(variant), SamplerConfig.from_variant(variant)
