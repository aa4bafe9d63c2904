"""The optimisation step's two builders in one import: the optimizer (:mod:`.optimizers`, with its
weight-decay split) and its step-based learning-rate schedule (:mod:`.schedulers`)."""

from __future__ import annotations

from isles_diffseg.training.optimizers import build_optimizer
from isles_diffseg.training.schedulers import build_scheduler

__all__ = ["build_optimizer", "build_scheduler"]
