"""The `slicing` pipeline."""

from isles_diffseg.pipelines.slicing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
