"""Mask <-> signal-space mapping."""

import pytest
import torch

from isles_diffseg.diffusion import mask_to_signal, signal_to_probability


def test_mask_maps_to_signal_and_back():
    mask = torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(mask_to_signal(mask), torch.tensor([-1.0, -0.5, 1.0]))
    torch.testing.assert_close(signal_to_probability(mask_to_signal(mask)), mask)
    assert mask_to_signal(torch.tensor([0, 1], dtype=torch.uint8)).dtype == torch.float32


def test_probability_clips_overshoot_and_mask_range_is_checked():
    torch.testing.assert_close(
        signal_to_probability(torch.tensor([-1.5, 0.0, 1.2])), torch.tensor([0.0, 0.5, 1.0])
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_to_signal(torch.tensor([0.0, 255.0]))
