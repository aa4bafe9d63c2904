"""Each model's downsampling factor is known without building it, and agrees with its constructor."""

from __future__ import annotations

from pathlib import Path

import pytest

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.models import IncompatibleImageSizeError, build_model, check_image_size, size_multiple

MODELS = load_variant_group("model", Path(__file__).parents[2] / "conf" / "base")


@pytest.mark.parametrize(("name", "multiple"), [
    ("medsegdiff_tiny_cpu", 4),  # num_layers 3: halved twice
    ("medsegdiff_256_4l_16c_6x4a_128t_1btl_large", 8),
    ("medsegdiff_32_1l_8c_2x2a_128t_1btl_debug", 1),  # one level: no downsampling
    ("unet_baseline", 8),  # filters 32-64-128-256
    ("unet_baseline_tiny_cpu", 4),
    ("org_medsegdiff_S", 8),  # channel_mult of 4 levels, highway as deep
    ("org_medsegdiff_L", 32),
    ("diffswintr_s", 32),  # patch 4, then 3 patch merges
])
def test_size_multiple_of_each_variant(name, multiple):
    assert size_multiple(MODELS[name]) == multiple


@pytest.mark.parametrize("name", ["medsegdiff_tiny_cpu", "unet_baseline_tiny_cpu", "org_medsegdiff_tiny_cpu",
                                  "diffswintr_tiny_cpu"])
def test_the_constructor_accepts_exactly_the_multiples(name):
    config = MODELS[name]
    multiple = size_multiple(config)
    build_model(config, image_size=2 * multiple, image_channels=2)
    if multiple > 1:
        with pytest.raises(ValueError, match="image_size"):
            build_model(config, image_size=2 * multiple + 1, image_channels=2)


def test_an_incompatible_size_names_both_settings_and_sizes_that_work():
    with pytest.raises(IncompatibleImageSizeError,
                       match=r"slicing\.image_size=63 does not suit training\.model='medsegdiff_tiny_cpu': the "
                             r"medsegdiff model downsamples the image by 4, so the size must be a positive multiple "
                             r"of 4 \(e\.g\. 60 or 64\); re-run slicing"):
        check_image_size({**MODELS["medsegdiff_tiny_cpu"], "name": "medsegdiff_tiny_cpu"}, 63,
                         model_setting="training.model", hint="re-run slicing")
    check_image_size(MODELS["medsegdiff_tiny_cpu"], 64, model_setting="training.model")
    check_image_size(MODELS["medsegdiff_32_1l_8c_2x2a_128t_1btl_debug"], 63, model_setting="training.model")


@pytest.mark.parametrize("size", [0, -8, 64.0, True])
def test_a_size_that_is_not_a_positive_integer_is_refused(size):
    with pytest.raises(IncompatibleImageSizeError, match=r"slicing\.image_size must be a positive integer"):
        check_image_size(MODELS["medsegdiff_tiny_cpu"], size, model_setting="training.model")
