"""The `ingestion` pipeline."""

from isles_diffseg.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
