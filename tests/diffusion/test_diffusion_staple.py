"""Soft STAPLE expectation-maximisation consensus."""

import pytest
import torch

from isles_diffseg.diffusion import fuse_mean, soft_staple, soft_staple_em


def members_with_one_perfect(truth: torch.Tensor, noisy: int = 4, seed: int = 0) -> torch.Tensor:
    """Member 0 equals ``truth``; the others flip 30% of pixels and add soft jitter."""
    generator = torch.Generator().manual_seed(seed)
    members = [truth]
    for _ in range(noisy):
        flips = torch.rand(truth.shape, generator=generator) < 0.3
        jitter = torch.rand(truth.shape, generator=generator) * 0.2
        members.append((torch.where(flips, 1 - truth, truth) - jitter).abs().clamp(0, 1))
    return torch.stack(members)


def lesion_truth(batch: int = 2) -> torch.Tensor:
    truth = torch.zeros(batch, 1, 16, 16)
    truth[:, :, 4:10, 5:12] = 1
    return truth


def test_staple_trusts_the_perfect_member_over_the_mean():
    truth = lesion_truth()
    samples = members_with_one_perfect(truth)
    result = soft_staple_em(samples, max_iter=200)
    mean_error = (fuse_mean(samples) - truth).abs().mean()
    staple_error = (result.probability - truth).abs().mean()
    assert staple_error < 0.1 * mean_error
    assert result.sensitivity.shape == result.specificity.shape == (5, 2)
    assert torch.all(result.sensitivity[0] > result.sensitivity[1:])
    assert torch.all(result.specificity[0] > result.specificity[1:])
    assert result.converged and result.iterations < 200
    assert result.prior.tolist() == pytest.approx(truth.mean(dim=(1, 2, 3)).tolist(), abs=1e-3)


def test_each_image_estimates_its_own_member_reliability():
    truth = lesion_truth()
    noisy = members_with_one_perfect(truth, noisy=1)
    # member 0 is perfect on image 0 and noisy on image 1; member 1 the other way round
    samples = torch.stack([torch.stack([noisy[0, 0], noisy[1, 1]]), torch.stack([noisy[1, 0], noisy[0, 1]])])
    samples = torch.cat([samples, members_with_one_perfect(truth, noisy=2, seed=1)[1:]])
    result = soft_staple_em(samples)
    assert result.sensitivity[0, 0] > result.sensitivity[1, 0]
    assert result.sensitivity[1, 1] > result.sensitivity[0, 1]
    assert (result.probability - truth).abs().mean() < 0.02


def test_staple_stops_at_max_iter_or_tolerance():
    samples = members_with_one_perfect(lesion_truth())
    capped = soft_staple_em(samples, max_iter=1, tol=0.0)
    assert capped.iterations == 1 and not capped.converged
    loose = soft_staple_em(samples, max_iter=50, tol=1.0)
    assert loose.iterations == 1 and loose.converged
    tight = soft_staple_em(samples, max_iter=200, tol=1e-5)
    assert 1 < tight.iterations < 200 and tight.converged
    again = soft_staple_em(samples, max_iter=tight.iterations + 5, tol=1e-5)
    torch.testing.assert_close(again.probability, tight.probability)


def test_unanimous_and_empty_members_give_their_common_answer():
    truth = lesion_truth(batch=1)
    torch.testing.assert_close(soft_staple(truth.expand(3, -1, -1, -1, -1)), truth, atol=1e-4, rtol=0)
    empty = soft_staple(torch.zeros(3, 1, 1, 8, 8))
    assert torch.isfinite(empty).all() and empty.max() < 1e-4


def test_staple_rejects_values_outside_unit_interval_and_bad_settings():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_staple(torch.full((2, 1, 1, 2, 2), 1.5))
    with pytest.raises(ValueError, match="max_iter"):
        soft_staple(torch.zeros(2, 1, 1, 2, 2), max_iter=0)
    with pytest.raises(ValueError, match="samples must be"):
        soft_staple(torch.zeros(2, 1))
