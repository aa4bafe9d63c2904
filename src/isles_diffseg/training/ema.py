"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage:
    """Keeps an EMA copy of a model's parameters and buffers (on the model's device).

    With ``warmup`` the effective rate is ``min(rate, (1 + n) / (10 + n))`` after n updates, so a
    rate of 0.9999 does not leave the average stuck near the random initialisation for the first
    tens of thousands of steps.
    """

    def __init__(self, model: nn.Module, rate: float = 0.9999, warmup: bool = True):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"EMA rate must be in [0, 1), got {rate}")
        self.rate, self.warmup, self.updates = rate, warmup, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_rate(self) -> float:
        if not self.warmup:
            return self.rate
        return min(self.rate, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        rate = self.current_rate()
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                target.lerp_(value.detach().to(target.dtype), 1.0 - rate)
            else:
                target.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "rate": self.rate, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates, self.rate, self.warmup = state["updates"], state["rate"], state["warmup"]
