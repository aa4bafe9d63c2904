"""The `comparison` pipeline."""

from isles_diffseg.pipelines.comparison.pipeline import create_demo_comparison, create_pipeline

__all__ = ["create_demo_comparison", "create_pipeline"]
