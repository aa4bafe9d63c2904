"""Noise keyed to each sample: standard normal, and a sample's noise ignores the rest of its batch."""

from __future__ import annotations

import pytest
import torch

from isles_diffseg.inference.keyed_noise import case_key, keyed_normal, mix32, sample_keys


def _keys(cases, slices, members, seed=0):
    return sample_keys(seed, torch.tensor(cases), torch.tensor(slices), torch.tensor(members))


def test_the_hash_is_the_lowbias32_finaliser():
    # values of the reference C implementation (x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b;
    # x ^= x >> 16) on uint32, worked out by hand for 1 and 0xFFFFFFFF with Python integers
    def reference(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 12345, 0xFFFFFFFF]
    assert mix32(torch.tensor(values)).tolist() == [reference(v) for v in values]


def test_a_samples_noise_depends_on_its_key_and_stream_only():
    keys = _keys([case_key("sub-stroke0001")] * 3, [0, 1, 2], [0, 0, 0])
    alone = keyed_normal(keys[1:2], 0, (1, 1, 8, 8))
    in_batch = keyed_normal(keys, 0, (3, 1, 8, 8))
    assert torch.equal(in_batch[1:2], alone)  # the same noise whatever else is in the batch
    assert not torch.equal(in_batch[0], in_batch[1])  # neighbouring slices differ
    assert not torch.equal(keyed_normal(keys, 1, (3, 1, 8, 8)), in_batch)  # each step has its own stream


@pytest.mark.parametrize(("a", "b"), [
    ((1, 0, 0, 0), (1, 0, 1, 0)),  # another member of the same slice
    ((1, 0, 0, 0), (2, 0, 0, 0)),  # the same slice of another case
    ((1, 0, 0, 0), (1, 0, 0, 1)),  # another seed
])
def test_members_cases_and_seeds_get_uncorrelated_noise(a, b):
    def noise(case, slice_, member, seed):
        return keyed_normal(_keys([case], [slice_], [member], seed), 0, (1, 1, 64, 64)).flatten()

    x, y = noise(*a), noise(*b)
    # 4096 independent pairs: |correlation| < 0.06 is 3.8 standard errors
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1].item()) < 0.06


def test_the_noise_is_standard_normal():
    noise = keyed_normal(_keys(list(range(16)), [3] * 16, [0] * 16), 0, (16, 1, 64, 64)).flatten()
    assert noise.dtype == torch.float32 and torch.isfinite(noise).all()
    # 65,536 draws: the standard error of the mean is 0.004, of the SD 0.003
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02
    # tails of a normal: P(|z| > 2) = 4.55 %, P(|z| > 3) = 0.27 %
    assert abs((noise.abs() > 2).float().mean().item() - 0.0455) < 0.004
    assert abs((noise.abs() > 3).float().mean().item() - 0.0027) < 0.001
    # odd element counts are cut from the last pair
    assert keyed_normal(_keys([1], [0], [0]), 0, (1, 1, 3, 3)).shape == (1, 1, 3, 3)


def test_case_keys_are_stable_across_processes():
    # CRC-32, not Python's hash() (salted per process): the same number in every worker and every run
    assert case_key("sub-stroke0001") == 0x238c3a76
