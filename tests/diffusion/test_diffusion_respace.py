"""Respacing keeps the requested original timesteps and the same noise levels there."""

import numpy as np
import pytest
import torch

from isles_diffseg.diffusion import GaussianDiffusion, get_beta_schedule, respaced_betas, space_timesteps


def test_ddim_specs_are_evenly_strided_with_exact_counts_from_zero():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim250") == list(range(0, 1000, 4))
    assert space_timesteps(100, "ddim100") == list(range(100))


def test_trailing_specs_end_at_the_last_step_so_sampling_starts_from_pure_noise():
    # round(T - i T / N) - 1 for i < N, by hand
    assert space_timesteps(1000, "trailing10") == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert space_timesteps(1000, "trailing1") == [999]
    assert space_timesteps(1000, "trailing3") == [332, 666, 999]
    assert space_timesteps(10, "trailing10") == list(range(10))
    assert space_timesteps(1000, "ddim10")[-1] == 900  # the leading spacing it replaces stops short
    with pytest.raises(ValueError, match="between 1 and 1000"):
        space_timesteps(1000, "trailing0")
    with pytest.raises(ValueError, match="cannot parse"):
        space_timesteps(1000, "trailingx")


def test_int_spec_spreads_steps_over_the_whole_range():
    kept = space_timesteps(1000, 50)
    assert len(kept) == 50 and kept[0] == 0 and kept[-1] == 999
    assert space_timesteps(1000, "50") == kept
    assert space_timesteps(1000, 1000) == list(range(1000))


def test_section_counts_stride_each_section_separately():
    kept = space_timesteps(300, "10,15,20")
    first, second, third = kept[:10], kept[10:25], kept[25:]
    assert len(kept) == 45
    assert (first[0], first[-1]) == (0, 99) and (second[0], second[-1]) == (100, 199)
    assert (third[0], third[-1]) == (200, 299)
    assert space_timesteps(300, [10, 15, 20]) == kept


def test_impossible_specs_are_rejected():
    with pytest.raises(ValueError, match="exactly 300"):
        space_timesteps(1000, "ddim300")
    with pytest.raises(ValueError, match="section of"):
        space_timesteps(30, "20,5")
    with pytest.raises(ValueError, match="cannot parse"):
        space_timesteps(1000, "fifty")
    with pytest.raises(ValueError, match="positive"):
        space_timesteps(1000, 0)


@pytest.mark.parametrize("spec", ["ddim50", "10,10,30", 7])
def test_respaced_betas_reproduce_alphas_cumprod_at_kept_steps(spec):
    full = GaussianDiffusion(get_beta_schedule("cosine", 1000))
    kept = space_timesteps(1000, spec)
    chain = GaussianDiffusion(respaced_betas(full.alphas_cumprod.numpy(), kept))
    np.testing.assert_allclose(chain.alphas_cumprod.numpy(), full.alphas_cumprod.numpy()[kept], rtol=1e-8)


def test_respaced_process_maps_steps_to_original_timesteps():
    full = GaussianDiffusion(get_beta_schedule("linear", 1000), model_output="v", variance="fixed_large")
    chain = full.respaced("ddim50")
    assert chain.is_respaced and not full.is_respaced
    assert chain.num_timesteps == 50
    assert (chain.model_output, chain.variance) == ("v", "fixed_large")
    assert chain.timestep_map.tolist() == space_timesteps(1000, "ddim50")
    assert chain.model_timesteps(torch.tensor([0, 1, 49])).tolist() == [0, 20, 980]
    torch.testing.assert_close(chain.alphas_cumprod, full.alphas_cumprod[chain.timestep_map])
    assert full.respaced(None) is full
    with pytest.raises(ValueError, match="already respaced"):
        chain.respaced("ddim10")


def test_respaced_betas_need_increasing_in_range_steps():
    alphas_cumprod = np.cumprod(1 - get_beta_schedule("cosine", 100))
    with pytest.raises(ValueError, match="strictly increasing"):
        respaced_betas(alphas_cumprod, [5, 3])
    with pytest.raises(ValueError, match="must lie in"):
        respaced_betas(alphas_cumprod, [0, 100])
