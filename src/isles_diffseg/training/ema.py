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
        self._own_slots = self._slots(self.model)
        self._source: nn.Module | None = None
        self._source_slots: list[tuple[dict, str]] = []

    def current_rate(self) -> float:
        if not self.warmup:
            return self.rate
        return min(self.rate, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        rate = self.current_rate()
        # one multi-tensor lerp (as torch.optim.swa_utils does) instead of a kernel per tensor (450 for the 16c
        # MedSegDiff) and two state_dict rebuilds per step
        averaged, latest = [], []
        for target, value in zip(self._tensors(self.model), self._tensors(model), strict=True):
            if value.dtype.is_floating_point:
                averaged.append(target)
                latest.append(value if value.dtype == target.dtype else value.to(target.dtype))
            else:
                target.copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, latest, 1.0 - rate)
        self.updates += 1

    def _tensors(self, model: nn.Module) -> list[torch.Tensor]:
        """What ``state_dict`` holds (parameters, then persistent buffers), in a fixed order, without building it.

        Where each tensor lives (its module's ``_parameters`` or ``_buffers`` and key) is found once per model:
        walking ~600 modules took 1.1 ms per call for the 16c model, twice per step on a host-bound GPU step. The
        tensors themselves are looked up at every call, since moves such as ``.to(memory_format=...)`` may
        replace them (a list of tensors taken once would go stale)."""
        if model is not self._source and model is not self.model:
            self._source, self._source_slots = model, self._slots(model)
        slots = self._own_slots if model is self.model else self._source_slots
        return [owner[key] for owner, key in slots]

    @staticmethod
    def _slots(model: nn.Module) -> list[tuple[dict, str]]:
        """(owning dict, key) of each parameter, then each persistent buffer, as ``state_dict`` orders them once
        shared tensors are counted once (``named_parameters``/``named_buffers`` drop the repeats)."""
        slots = []
        for named, kind in ((model.named_parameters(), "_parameters"), (model.named_buffers(), "_buffers")):
            for name, _ in named:
                path, _, key = name.rpartition(".")
                module = model.get_submodule(path)
                if kind == "_parameters" or key not in module._non_persistent_buffers_set:
                    slots.append((getattr(module, kind), key))
        return slots

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "rate": self.rate, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates, self.rate, self.warmup = state["updates"], state["rate"], state["warmup"]
