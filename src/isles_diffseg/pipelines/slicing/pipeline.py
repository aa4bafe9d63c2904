from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.slicing.nodes import build_slice_store


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(build_slice_store, ["preprocessed_cases", "case_manifest", "params:slicing", "params:data"],
                 "slice_store", name="build_slice_store"),
        ],
        tags=["data_processing"],
    )
