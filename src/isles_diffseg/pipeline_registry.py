"""Project pipelines. Names are part of the interface: ``kedro run --pipelines NAME``."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from isles_diffseg.pipelines import (
    comparison,
    cross_validation,
    evaluation,
    ingestion,
    nnunet_export,
    slicing,
    splits,
    synthetic,
    training,
)


def register_pipelines() -> dict[str, Pipeline]:
    data_processing = ingestion.create_pipeline() + slicing.create_pipeline() + splits.create_pipeline()
    # The demo chain reads the synthetic release it has just written, whatever data.root says.
    demo_data = Pipeline(data_processing, inputs={"isles24_raw": "isles24_synthetic"})
    # The UNet baseline: the same training and evaluation nodes under the `unet_baseline` namespace,
    # reading the shared data and its own `unet_baseline.training` parameters.
    shared = {"slice_store", "case_folds", "preprocessed_cases", "case_manifest"}
    unet_baseline = Pipeline(
        training.create_pipeline() + evaluation.create_pipeline(),
        namespace="unet_baseline",
        inputs=shared,
        parameters={"params:variants", "params:evaluation", "params:data"},
        # its summary leaves the namespace under a plain name: the comparison node outside it would
        # otherwise read a dotted name, which Kedro reserves for namespaces (and warns about)
        outputs={"evaluation_summary": "unet_baseline_evaluation_summary"},
    )
    demo = (synthetic.create_pipeline() + demo_data + training.create_pipeline() + evaluation.create_pipeline()
            + unet_baseline + comparison.create_demo_comparison())
    return {
        "synthetic": synthetic.create_pipeline(),
        "ingestion": ingestion.create_pipeline(),
        "slicing": slicing.create_pipeline(),
        "splits": splits.create_pipeline(),
        "data_processing": data_processing,
        "training": training.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "comparison": comparison.create_pipeline(),
        # Every fold of case_folds: independent training + evaluation runs, then data/08_reporting/cv_<name>/.
        "cross_validation": cross_validation.create_pipeline(),
        "unet_baseline": unet_baseline,
        # The ingested cases and our folds as an nnU-Net v2 raw dataset (Dataset<id>_<name>, splits_final.json).
        "nnunet_export": nnunet_export.create_pipeline(),
        "__default__": demo,
    }
