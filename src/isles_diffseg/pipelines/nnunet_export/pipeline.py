from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.nnunet_export.nodes import export_nnunet_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [Node(export_nnunet_dataset, ["preprocessed_cases", "case_folds", "case_manifest", "params:data",
                                      "params:nnunet"], "nnunet_raw_dataset", name="export_nnunet_dataset")],
        tags=["nnunet_export"],
    )
