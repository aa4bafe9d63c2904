from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.ingestion.nodes import build_case_manifest, ingest_cases


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(ingest_cases, ["isles24_raw", "params:data", "params:ingestion"], "preprocessed_cases",
                 name="ingest_cases"),
            Node(build_case_manifest, ["preprocessed_cases", "isles24_raw"], "case_manifest", name="build_case_manifest"),
        ],
        tags=["data_processing"],
    )
