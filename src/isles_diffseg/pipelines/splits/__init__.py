"""The `splits` pipeline."""

from isles_diffseg.pipelines.splits.pipeline import create_pipeline

__all__ = ["create_pipeline"]
