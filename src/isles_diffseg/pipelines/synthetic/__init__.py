"""The `synthetic` pipeline."""

from isles_diffseg.pipelines.synthetic.pipeline import create_pipeline

__all__ = ["create_pipeline"]
