"""Where tensors run: the device choice and whether the CUDA fast path is on.

The fast path is three things that pay on a GPU and cost (or do nothing) on a CPU: ``torch.compile``
of the network, the training slices held on the device, and the fused AdamW kernel. One setting
(``fast_path``) turns all three on or off, so an eager run for comparison or debugging is one override.
"""

from __future__ import annotations

import torch

FAST_PATH_SETTINGS = ("auto", True, False)


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
