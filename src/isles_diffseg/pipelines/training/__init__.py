"""The `training` pipeline."""

from isles_diffseg.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
