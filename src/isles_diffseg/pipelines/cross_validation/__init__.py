"""The `cross_validation` pipeline."""

from isles_diffseg.pipelines.cross_validation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
