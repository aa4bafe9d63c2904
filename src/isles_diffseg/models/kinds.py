"""The two kinds of model and how each is called.

* A **diffusion denoiser** (``DIFFUSION``: MedSegDiff, ORG-MedSegDiff, DiffSwinTr) is called
  ``model(x_t, t, image)`` by the diffusion process and predicts epsilon or x0 of the mask signal.
* A **segmentation network** (``DISCRIMINATIVE``: the DynUNet baseline) is called ``model(image)`` and
  returns segmentation logits ``(B, 1, H, W)``; there is no noisy mask and no timestep.

The kind belongs to the architecture (``register_model(name, kind=...)``), so a variant file, a run
config and a built model all answer :func:`architecture_kind` / :func:`model_kind` the same way, and the
training/evaluation code asks for the kind instead of comparing architecture names. Callers use
:func:`segmentation_logits` for a segmentation network, which calls ``model(image)``: through
DistributedDataParallel or ``torch.compile`` wrappers too, since it goes through ``forward``.
"""

from __future__ import annotations

from torch import Tensor, nn

DIFFUSION = "diffusion"
DISCRIMINATIVE = "discriminative"
KINDS = (DIFFUSION, DISCRIMINATIVE)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    return kind


def model_kind(model: nn.Module) -> str:
    """The kind of a built model, looking through DDP (``.module``) and torch.compile (``._orig_mod``)."""
    inner = model
    while True:
        if hasattr(inner, "model_kind"):
            return str(inner.model_kind)
        nxt = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if nxt is None:
            return DIFFUSION  # every architecture without the attribute is a denoiser
        inner = nxt


def segmentation_logits(model: nn.Module, image: Tensor) -> Tensor:
    """Logits of a segmentation network for ``image`` (B, C, H, W): the one way to call that kind."""
    return model(image)
