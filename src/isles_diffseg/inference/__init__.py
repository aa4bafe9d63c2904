"""Turning a trained model into per-slice probabilities (diffusion sampling or a direct forward pass)."""

from isles_diffseg.inference.predict import SamplerConfig, build_diffusion, predict_probabilities

__all__ = ["SamplerConfig", "build_diffusion", "predict_probabilities"]
