from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.splits.nodes import make_case_folds


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [Node(make_case_folds, ["case_manifest", "params:splits", "params:data"], "case_folds", name="make_case_folds")],
        tags=["data_processing"],
    )
