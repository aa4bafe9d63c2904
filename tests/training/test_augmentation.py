"""Batch augmentation on the training device: per-sample draws, degrees, aligned binary masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.training.augmentation import build_augmentation

CONF = Path(__file__).parents[2] / "conf" / "base"


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def preset(name: str) -> dict:
    return {"name": name, **load_variant_group("augmentation", CONF)[name]}


def disk_mask(batch: int = 1, size: int = 32, radius: float = 7.0, centre=(13.0, 18.0)) -> torch.Tensor:
    """Off-centre disks, so that a flip or rotation visibly moves them."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    disk = ((y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2).float()
    return disk.expand(batch, 1, size, size).clone()


def spatial_only(**sections) -> dict:
    return {"name": "test", **sections}


def test_presets_load_build_and_keep_shapes_dtypes_and_finiteness():
    variants = load_variant_group("augmentation", CONF)
    assert set(variants) >= {"none", "light_2d", "aggressive_2d"}
    tokens = {name: build_augmentation({"name": name, **config}).token for name, config in variants.items()}
    assert tokens["none"] == "augNONE" and tokens["light_2d"] == "augLIGHT2D" and tokens["aggressive_2d"] == "augAGG2D"
    for dtype in (torch.float32, torch.float64):
        image = torch.rand(6, 3, 24, 20, generator=seeded(), dtype=dtype)
        mask = disk_mask(6, 24)[..., :20].to(dtype)
        for name, config in variants.items():
            out_image, out_mask = build_augmentation({"name": name, **config})(image, mask, seeded(1))
            assert out_image.shape == image.shape and out_image.dtype == dtype, name
            assert out_mask.shape == mask.shape and out_mask.dtype == dtype, name
            assert torch.isfinite(out_image).all(), name


def test_aggressive_preset_draws_what_its_config_says():
    augmentation = build_augmentation(preset("aggressive_2d"))
    flip, rotation, zoom = augmentation.spatial.parts
    assert (flip.prob_h, flip.prob_w) == (0.5, 0.5)
    assert rotation.prob == 0.5 and rotation.degrees_range == (-15.0, 15.0)  # degrees, not radians
    assert zoom.factor_range == (0.9, 1.1)
    assert [type(t).__name__ for t in augmentation.intensity] == [
        "RandomChannelGamma", "RandomChannelScale", "RandomChannelShift", "RandomGaussianBlur", "RandomGaussianNoise"]


def test_none_is_the_identity_and_draws_nothing():
    augmentation = build_augmentation(preset("none"))
    image, mask = torch.rand(2, 2, 8, 8), disk_mask(2, 8, radius=2, centre=(3, 4))
    generator = seeded()
    state = generator.get_state()
    out_image, out_mask = augmentation(image, mask, generator)
    assert out_image is image and out_mask is mask
    assert torch.equal(generator.get_state(), state)


def test_flip_on_h_only_mirrors_rows_and_nothing_else():
    augmentation = build_augmentation(spatial_only(flip_prob={"h": 1.0, "w": 0.0}))
    image, mask = torch.rand(3, 2, 10, 12, generator=seeded()), disk_mask(3, 12, radius=3, centre=(3, 8))[..., :10, :]
    out_image, out_mask = augmentation(image, mask, seeded())
    torch.testing.assert_close(out_image, image.flip(-2), atol=1e-5, rtol=0)
    assert torch.equal(out_mask, mask.flip(-2))


def test_flip_axes_get_independent_coins():
    augmentation = build_augmentation(spatial_only(flip_prob={"h": 0.5, "w": 0.5}))
    image = torch.rand(1, 1, 6, 6, generator=seeded()).expand(64, 1, 6, 6).contiguous()
    out_image, _ = augmentation(image, torch.zeros(64, 1, 6, 6), seeded())
    outcomes = set()
    for sample in out_image:
        for name, candidate in {"none": image[0], "h": image[0].flip(-2), "w": image[0].flip(-1),
                                "hw": image[0].flip(-2, -1)}.items():
            if torch.allclose(sample, candidate, atol=1e-5):
                outcomes.add(name)
    assert outcomes == {"none", "h", "w", "hw"}


@pytest.mark.parametrize(("degrees", "quarter_turns"), [(90.0, 1), (-90.0, -1)])
def test_rotation_angles_are_degrees(degrees, quarter_turns):
    # 90 read as radians would be a ~117 degree turn and match neither rot90.
    augmentation = build_augmentation(spatial_only(rotation={"prob": 1.0, "degrees": [degrees, degrees]}))
    image = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    mask = disk_mask(1, 8, radius=2.5, centre=(2.0, 5.0))
    out_image, out_mask = augmentation(image, mask, seeded())
    torch.testing.assert_close(out_image, torch.rot90(image, quarter_turns, dims=(-2, -1)), atol=1e-3, rtol=0)
    assert torch.equal(out_mask, torch.rot90(mask, quarter_turns, dims=(-2, -1)))


def test_rotation_is_rigid_on_non_square_images():
    augmentation = build_augmentation(spatial_only(rotation={"prob": 1.0, "degrees": [90, 90]}))
    image = torch.rand(1, 1, 6, 10, generator=seeded())
    out_image, _ = augmentation(image, torch.zeros(1, 1, 6, 10), seeded())
    # The central 6x6 square turns into itself; a rotation done in normalised coordinates would shear it.
    torch.testing.assert_close(out_image[..., 2:8], torch.rot90(image[..., 2:8], 1, dims=(-2, -1)), atol=1e-4, rtol=0)


def test_zoom_above_one_enlarges_the_content():
    augmentation = build_augmentation(spatial_only(zoom={"prob": 1.0, "factor_range": [2.0, 2.0]}))
    mask = disk_mask(1, 32, radius=4.0, centre=(15.5, 15.5))
    _, out_mask = augmentation(torch.zeros(1, 1, 32, 32), mask, seeded())
    assert out_mask.sum() / mask.sum() == pytest.approx(4.0, rel=0.15)


def test_masks_stay_binary_and_aligned_with_the_image_after_spatial_transforms():
    augmentation = build_augmentation(spatial_only(
        flip_prob={"h": 0.5, "w": 0.5}, rotation={"prob": 1.0, "degrees": 30}, zoom={"prob": 1.0, "factor_range": [0.8, 1.2]}))
    mask = disk_mask(8, 32)
    image = torch.cat([mask, torch.rand(8, 1, 32, 32, generator=seeded())], dim=1)  # channel 0 is the mask
    out_image, out_mask = augmentation(image, mask, seeded(3))
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out_mask, mask)
    disagreement = ((out_image[:, :1] > 0.5).float() != out_mask).float().mean()
    assert disagreement < 0.01


@pytest.mark.parametrize(
    "section",
    [
        {"rotation": {"prob": 1.0, "degrees": 15}},
        {"zoom": {"prob": 1.0, "factor_range": [0.8, 1.2]}},
        {"gamma": {"prob": 1.0, "gamma_range": [0.5, 2.0]}},
        {"intensity_scale": {"prob": 1.0, "factor_range": [0.8, 1.2]}},
        {"intensity_shift": {"prob": 1.0, "offset_range": [-0.1, 0.1]}},
        {"blur": {"prob": 1.0, "sigma_range": [0.3, 1.5]}},
        {"noise": {"prob": 1.0, "std_range": [0.01, 0.05]}},
    ],
    ids=lambda section: next(iter(section)),
)
def test_every_sample_draws_its_own_transform(section):
    augmentation = build_augmentation(spatial_only(**section))
    image = torch.rand(1, 2, 16, 16, generator=seeded()).expand(4, 2, 16, 16).contiguous()
    out_image, _ = augmentation(image, disk_mask(4, 16, radius=4, centre=(6, 9)), seeded())
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out_image[i], out_image[j], atol=1e-4), (i, j)


def test_intensity_jitter_is_drawn_per_channel_and_spares_the_mask():
    augmentation = build_augmentation(spatial_only(intensity_shift={"prob": 1.0, "offset_range": [-0.1, 0.1]}))
    image = torch.full((1, 2, 8, 8), 0.5)  # two identical modalities
    mask = disk_mask(1, 8, radius=2, centre=(3, 4))
    out_image, out_mask = augmentation(image, mask, seeded())
    shifts = out_image - image
    assert torch.allclose(shifts, shifts[..., :1, :1].expand_as(shifts))  # a constant offset per channel...
    assert not torch.isclose(shifts[0, 0, 0, 0], shifts[0, 1, 0, 0])  # ...that differs between channels
    assert shifts.abs().max() <= 0.1 and torch.equal(out_mask, mask)


def test_gamma_works_on_values_clipped_to_the_unit_range():
    augmentation = build_augmentation(spatial_only(gamma={"prob": 1.0, "gamma_range": [2.0, 2.0]}))
    image = torch.tensor([-0.5, 0.0, 0.5, 1.0, 3.0]).view(1, 1, 1, 5)
    out_image, _ = augmentation(image, torch.zeros(1, 1, 1, 5), seeded())
    torch.testing.assert_close(out_image.flatten(), torch.tensor([0.0, 0.0, 0.25, 1.0, 1.0]))


def test_blur_preserves_constants_and_smooths_texture():
    augmentation = build_augmentation(spatial_only(blur={"prob": 1.0, "sigma_range": [1.0, 1.0]}))
    flat = torch.full((2, 2, 9, 9), 0.3)
    torch.testing.assert_close(augmentation(flat, torch.zeros(2, 1, 9, 9), seeded())[0], flat)
    checkerboard = ((torch.arange(9).view(-1, 1) + torch.arange(9).view(1, -1)) % 2).float().expand(2, 2, 9, 9)
    blurred, _ = augmentation(checkerboard, torch.zeros(2, 1, 9, 9), seeded())
    assert blurred.std() < 0.2 * checkerboard.std()


def test_noise_std_stays_within_its_range():
    augmentation = build_augmentation(spatial_only(noise={"prob": 1.0, "std_range": [0.02, 0.04]}))
    image = torch.zeros(4, 2, 32, 32)
    noisy, _ = augmentation(image, torch.zeros(4, 1, 32, 32), seeded())
    per_sample_std = noisy.flatten(1).std(dim=1)
    assert ((per_sample_std > 0.017) & (per_sample_std < 0.045)).all()


def test_same_generator_seed_gives_the_same_batch_and_another_seed_does_not():
    augmentation = build_augmentation(preset("aggressive_2d"))
    image, mask = torch.rand(4, 2, 16, 16, generator=seeded(5)), disk_mask(4, 16, radius=4, centre=(6, 9))
    first, first_mask = augmentation(image, mask, seeded(7))
    second, second_mask = augmentation(image, mask, seeded(7))
    third, _ = augmentation(image, mask, seeded(8))
    assert torch.equal(first, second) and torch.equal(first_mask, second_mask)
    assert not torch.equal(first, third)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rotaton": {"prob": 0.5, "degrees": 15}}, r"unknown keys \['rotaton'\]"),
        ({"rotation": {"prob": -0.1, "degrees": 15}}, r"rotation.prob must be a probability"),
        ({"flip_prob": {"h": 1.5, "w": 0.5}}, r"flip_prob.h must be a probability"),
        ({"flip_prob": {"h": 0.5, "x": 0.5}}, r"flip_prob: unknown keys \['x'\]"),
        ({"noise": {"prob": 0.5}}, r"noise: missing keys \['std_range'\]"),
        ({"noise": {"prob": 0.5, "std_range": [-0.1, 0.1]}}, r"noise.std_range must be >= 0"),
        ({"zoom": {"prob": 0.5, "factor_range": [1.1, 0.9]}}, r"zoom.factor_range: low 1.1 is above high 0.9"),
        ({"gamma": {"prob": "0.3", "gamma_range": [0.7, 1.5]}}, r"gamma.prob must be a finite number"),
        ({"blur": [0.2, 0.5]}, r"blur must be a mapping"),
    ],
)
def test_bad_configs_name_the_offending_key(config, message):
    with pytest.raises(ValueError, match=message):
        build_augmentation({"name": "bad", **config})


def test_batches_of_the_wrong_shape_are_refused():
    augmentation = build_augmentation(preset("light_2d"))
    with pytest.raises(ValueError, match="expected image"):
        augmentation(torch.rand(2, 16, 16), torch.zeros(2, 1, 16, 16), seeded())
