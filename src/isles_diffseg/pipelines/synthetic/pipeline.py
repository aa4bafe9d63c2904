from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.synthetic.nodes import generate_synthetic_dataset, summarise_release


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(generate_synthetic_dataset, "params:synthetic", "isles24_synthetic", name="generate_synthetic_dataset"),
            Node(summarise_release, "isles24_synthetic", "synthetic_cases", name="summarise_synthetic_dataset"),
        ],
        tags=["synthetic"],
    )
