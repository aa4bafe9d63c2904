"""Where tensors run: the device choice, whether the CUDA fast path is on, and how it compiles.

The fast path is three things that pay on a GPU and cost (or do nothing) on a CPU: ``torch.compile``
of the network, the training slices held on the device, and the fused AdamW kernel. One setting
(``fast_path``) turns all three on or off, so an eager run for comparison or debugging is one override.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

FAST_PATH_SETTINGS = ("auto", True, False)
# torch.compile's modes (inductor only): default; reduce-overhead = CUDA graphs; max-autotune(-no-cudagraphs)
# benchmarks kernel configurations while compiling
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU; any other name is taken as a torch device string."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fast_path_enabled(setting: str | bool, device: torch.device) -> bool:
    """``auto`` means on for CUDA only: on a 2-core CPU, compiling costs minutes that a short run never earns back."""
    if setting not in FAST_PATH_SETTINGS:
        raise ValueError(f"fast_path must be auto, true or false, got {setting!r}")
    return device.type == "cuda" if setting == "auto" else bool(setting)


def check_compile_mode(mode: str, setting: str = "compile_mode") -> str:
    """``mode`` if torch.compile knows it, else a ValueError naming ``setting``."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"{setting} must be one of {COMPILE_MODES}, got {mode!r}")
    return mode


def uses_cuda_graphs(mode: str, backend: str | Callable[..., Any]) -> bool:
    """Whether a module compiled with ``mode`` and ``backend`` replays CUDA graphs (modes are inductor's)."""
    return backend == "inductor" and mode in CUDA_GRAPH_MODES


def compile_module(module: nn.Module, mode: str, backend: str | Callable[..., Any], **options: Any) -> nn.Module:
    """``torch.compile`` with ``mode`` passed to inductor only: other backends (aot_eager in the CPU tests) take none."""
    return torch.compile(module, backend=backend, **({"mode": mode} if backend == "inductor" else {}), **options)
