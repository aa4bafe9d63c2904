"""Ensemble sampling in one batched run, and mean fusion / uncertainty maps."""

import math

import pytest
import torch
from diffusion_oracle import OracleModel, make_clean_mask

from isles_diffseg.diffusion import (
    GaussianDiffusion,
    ddim_sample,
    ddpm_sample,
    fuse_mean,
    get_beta_schedule,
    sample_ensemble,
    signal_to_probability,
    uncertainty,
)


@pytest.fixture
def clean_mask():
    return make_clean_mask()


def process():
    return GaussianDiffusion(get_beta_schedule("cosine", 1000))


def test_ensemble_makes_one_model_call_per_step_for_all_members(clean_mask):
    diffusion = process()
    model = OracleModel(diffusion)
    probabilities = sample_ensemble(ddim_sample, diffusion, model, clean_mask, members=3, respacing="ddim10")
    assert probabilities.shape == (3, *clean_mask.shape)
    assert model.batch_sizes == [3 * clean_mask.shape[0]] * 10


def test_max_batch_size_splits_the_repeated_batch(clean_mask):
    diffusion = process()
    model = OracleModel(diffusion)
    sample_ensemble(
        ddim_sample, diffusion, model, clean_mask, members=3, max_batch_size=4, respacing="ddim10"
    )
    assert model.batch_sizes == [4] * 10 + [2] * 10


def test_members_are_member_major_probabilities_of_their_own_image(clean_mask):
    diffusion = process()
    image = torch.cat([clean_mask, torch.randn_like(clean_mask)], dim=1)  # mask + an unrelated channel
    probabilities = sample_ensemble(
        ddpm_sample,
        diffusion,
        OracleModel(diffusion),
        image,
        members=4,
        respacing="ddim10",
        max_batch_size=3,
    )
    expected = signal_to_probability(clean_mask).expand(4, *clean_mask.shape)
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=0)


def test_members_get_independent_noise():
    diffusion, image = process(), torch.zeros(2, 1, 8, 8)

    def model(x_t, t, image):
        return torch.zeros_like(x_t)

    probabilities = sample_ensemble(
        ddim_sample,
        diffusion,
        model,
        image,
        members=2,
        respacing="ddim10",
        generator=torch.Generator().manual_seed(0),
    )
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    assert not torch.allclose(probabilities[0], probabilities[1])


def test_ensemble_rejects_own_noise_snapshots_and_bad_counts(clean_mask):
    diffusion = process()
    model = OracleModel(diffusion)
    with pytest.raises(ValueError, match="noise"):
        sample_ensemble(ddim_sample, diffusion, model, clean_mask, members=2, noise=torch.zeros(4, 1, 4, 4))
    with pytest.raises(ValueError, match="snapshots"):
        sample_ensemble(ddim_sample, diffusion, model, clean_mask, members=2, snapshots=3)
    with pytest.raises(ValueError, match="members"):
        sample_ensemble(ddim_sample, diffusion, model, clean_mask, members=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        sample_ensemble(ddim_sample, diffusion, model, clean_mask, members=2, max_batch_size=0)


def test_fuse_mean_averages_members():
    samples = torch.stack([torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)])
    torch.testing.assert_close(fuse_mean(samples), torch.full((1, 1, 2, 2), 0.5))


def test_variance_and_entropy_uncertainty():
    agree = torch.ones(3, 1, 1, 1, 1)
    split = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1, 1)
    assert uncertainty(agree, "variance").item() == 0
    assert uncertainty(split, "variance").item() == pytest.approx(0.25)
    assert uncertainty(agree, "entropy").item() == 0
    assert uncertainty(split, "entropy").item() == pytest.approx(1.0)  # bits: maximal at mean 0.5
    quarter = torch.tensor([0.25, 0.25]).reshape(2, 1, 1, 1, 1)
    expected_bits = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert uncertainty(quarter, "entropy").item() == pytest.approx(expected_bits)
    with pytest.raises(ValueError, match="kind"):
        uncertainty(split, "mutual_information")
