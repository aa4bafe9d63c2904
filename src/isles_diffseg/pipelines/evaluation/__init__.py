"""The `evaluation` pipeline."""

from isles_diffseg.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
