"""Per-slice lesion probabilities from a diffusion denoiser (ensemble of DDIM/DDPM samples) or a UNet."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from isles_diffseg.config.variants import select_variant
from isles_diffseg.diffusion import GaussianDiffusion, SampleResult, ddim_sample, ddpm_sample, sample_ensemble
from isles_diffseg.models.kinds import DIFFUSION, DISCRIMINATIVE, segmentation_logits

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None, None: None}


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample: from a diffusion variant (``conf/base/variants/diffusion``), overridable."""

    sampler: str = "ddim"
    respacing: str | int | None = "ddim50"
    eta: float = 0.0
    clip_x0: bool = True

    @classmethod
    def from_variant(cls, variant: Mapping[str, Any]) -> SamplerConfig:
        if variant.get("sampler", "ddim") not in ("ddim", "ddpm"):
            raise ValueError(f"diffusion variant sampler must be 'ddim' or 'ddpm', got {variant['sampler']!r}")
        return cls(variant.get("sampler", "ddim"), variant.get("respacing"), float(variant.get("eta", 0.0)),
                   bool(variant.get("clip_x0", True)))


# What a diffusion variant file (conf/base/variants/diffusion) may hold: the trained process (with the value a
# variant that leaves the key out gets), then how to sample it.
PROCESS_DEFAULTS: dict[str, Any] = {"num_timesteps": 1000, "schedule": "cosine", "model_output": "epsilon",
                                    "variance": "fixed_small", "input_scale": 1.0}
SAMPLING_KEYS = ("sampler", "respacing", "eta", "clip_x0")
_DESCRIPTIVE_KEYS = ("name", "description", "token")  # name: added by select_variant


def sampling_variant(trained: Mapping[str, Any], diffusion_variants: Mapping[str, Mapping[str, Any]], name: str,
                     setting: str) -> dict[str, Any]:
    """Variant ``name``'s way of sampling over the ``trained`` variant's process: a process key it leaves out is
    the run's, one it changes is an error naming ``setting`` (the network was trained on one process only)."""
    override = select_variant(diffusion_variants, name, "diffusion")
    for key, default in PROCESS_DEFAULTS.items():
        if key in override and override[key] != trained.get(key, default):
            raise ValueError(f"{setting}={name!r} changes {key} of the trained process ({trained.get(key, default)} "
                             f"-> {override[key]}); only sampling may change ({setting}=null samples with the run's "
                             "own variant)")
    return {**override, **{key: trained[key] for key in PROCESS_DEFAULTS if key in trained}}


def build_diffusion(variant: Mapping[str, Any]) -> GaussianDiffusion:
    """The full process a diffusion variant defines; a key it does not know is an error, not ignored."""
    known = {*PROCESS_DEFAULTS, *SAMPLING_KEYS, *_DESCRIPTIVE_KEYS}
    if unknown := sorted(set(variant) - known):
        raise ValueError(f"diffusion variant has unknown keys {unknown}; known: {sorted(known)}")
    process = {**PROCESS_DEFAULTS, **{key: variant[key] for key in PROCESS_DEFAULTS if key in variant}}
    if isinstance(process["input_scale"], bool) or not isinstance(process["input_scale"], int | float):
        raise ValueError(f"diffusion variant input_scale must be a number > 0, got {process['input_scale']!r}")
    return GaussianDiffusion.from_schedule(
        process["schedule"], int(process["num_timesteps"]), process["model_output"], process["variance"],
        float(process["input_scale"]),
    )


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: Tensor,
    *,
    kind: str,
    diffusion: GaussianDiffusion | None = None,
    sampler: SamplerConfig | None = None,
    members: int = 1,
    amp_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    max_batch_size: int | None = None,
) -> Tensor:
    """Probabilities (N, B, 1, H, W): N ensemble members for a diffusion model, N = 1 for a UNet."""
    if kind == DISCRIMINATIVE:
        with torch.autocast(device_type=image.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = segmentation_logits(model, image)
        return torch.sigmoid(logits.float())[None]
    if kind != DIFFUSION:
        raise ValueError(f"kind must be 'diffusion' or 'discriminative', got {kind!r}")
    if diffusion is None or sampler is None:
        raise ValueError("diffusion models need a diffusion process and a sampler configuration")
    sample_fn, options = sampling_call(sampler, amp_dtype, generator)
    return sample_ensemble(sample_fn, diffusion, model, image, members=members, max_batch_size=max_batch_size, **options)


def sampling_call(sampler: SamplerConfig, amp_dtype: torch.dtype | None,
                  generator: torch.Generator | None) -> tuple[Callable[..., SampleResult], dict[str, Any]]:
    """The sampler function a :class:`SamplerConfig` names and the keyword arguments to call it with."""
    sample_fn = ddim_sample if sampler.sampler == "ddim" else ddpm_sample
    options: dict[str, Any] = {"respacing": sampler.respacing, "clip_x0": sampler.clip_x0,
                               "amp_dtype": amp_dtype, "generator": generator}
    if sampler.sampler == "ddim":
        options["eta"] = sampler.eta
    return sample_fn, options
