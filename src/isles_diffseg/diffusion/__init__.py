"""Gaussian diffusion for mask generation: schedules, process maths, respacing, samplers and ensembles."""

from isles_diffseg.diffusion.ensemble import fuse_mean, sample_ensemble, uncertainty
from isles_diffseg.diffusion.gaussian import GaussianDiffusion, TrainingTerms, unpack_model_output
from isles_diffseg.diffusion.masks import mask_to_signal, signal_to_probability
from isles_diffseg.diffusion.respace import respaced_betas, space_timesteps
from isles_diffseg.diffusion.samplers import SampleResult, ddim_sample, ddpm_sample
from isles_diffseg.diffusion.schedules import DEFAULT_NUM_TIMESTEPS, get_beta_schedule
from isles_diffseg.diffusion.staple import StapleResult, soft_staple, soft_staple_em

__all__ = [
    "DEFAULT_NUM_TIMESTEPS",
    "GaussianDiffusion",
    "SampleResult",
    "StapleResult",
    "TrainingTerms",
    "ddim_sample",
    "ddpm_sample",
    "fuse_mean",
    "get_beta_schedule",
    "mask_to_signal",
    "respaced_betas",
    "sample_ensemble",
    "signal_to_probability",
    "soft_staple",
    "soft_staple_em",
    "space_timesteps",
    "uncertainty",
    "unpack_model_output",
]
