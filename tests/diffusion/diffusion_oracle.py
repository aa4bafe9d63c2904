"""Oracle model and a clean mask shared by the diffusion sampler and ensemble tests.

A plain helper module (not a conftest.py): other test folders import their own ``conftest`` by name.
"""

from __future__ import annotations

import torch
from torch import Tensor

from isles_diffseg.diffusion import GaussianDiffusion


class OracleModel(torch.nn.Module):
    """Knows the clean mask (the first channel of ``image``) and answers exactly for the FULL process.

    It reads the timestep as an ORIGINAL timestep, so a sampler passing respaced indices would make its
    answers wrong. It records every call's timesteps, batch size and grad mode.
    """

    def __init__(self, full_process: GaussianDiffusion, mask_channels: int = 1) -> None:
        super().__init__()
        self.alphas_cumprod = full_process.alphas_cumprod
        self.kind = full_process.model_output
        self.mask_channels = mask_channels
        self.timesteps: list[Tensor] = []
        self.batch_sizes: list[int] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x_t: Tensor, t: Tensor, image: Tensor) -> Tensor:
        self.timesteps.append(t.clone())
        self.batch_sizes.append(x_t.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled())
        x_start = image[:, : self.mask_channels].double()
        alpha_bar = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        eps = (x_t.double() - alpha_bar.sqrt() * x_start) / (1 - alpha_bar).sqrt()
        if self.kind == "epsilon":
            out = eps
        elif self.kind == "x0":
            out = x_start
        else:
            out = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x_start
        return out.float()


def make_clean_mask() -> Tensor:
    """A (2, 1, 4, 4) signal-space mask with values spread over [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 4, 4, generator=generator) * 2 - 1
