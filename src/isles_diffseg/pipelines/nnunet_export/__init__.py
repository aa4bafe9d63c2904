"""The `nnunet_export` pipeline."""

from isles_diffseg.pipelines.nnunet_export.pipeline import create_pipeline

__all__ = ["create_pipeline"]
