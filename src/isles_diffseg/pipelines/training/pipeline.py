from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.training.nodes import train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(train_model, ["slice_store", "case_folds", "params:training", "params:variants", "params:data"],
                 ["training_run", "training_history"], name="train_model"),
        ],
        tags=["training"],
    )
