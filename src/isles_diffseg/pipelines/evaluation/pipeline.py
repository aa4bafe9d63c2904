from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.evaluation.nodes import (
    build_report,
    predict_cases,
    score_cases,
    select_threshold,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(select_threshold, ["training_run", "slice_store", "case_folds", "preprocessed_cases",
                                    "params:evaluation", "params:variants", "params:data"], "threshold_selection",
                 name="select_threshold"),
            Node(predict_cases, ["training_run", "threshold_selection", "slice_store", "case_folds", "preprocessed_cases",
                                 "params:evaluation", "params:variants", "params:data"], "evaluation_predictions",
                 name="predict_cases"),
            Node(score_cases, ["evaluation_predictions", "threshold_selection", "preprocessed_cases", "case_folds",
                               "params:evaluation"], "evaluation_case_metrics", name="score_cases"),
            Node(build_report, ["evaluation_case_metrics", "threshold_selection", "evaluation_predictions",
                                "preprocessed_cases", "case_manifest", "params:evaluation"],
                 ["evaluation_summary", "evaluation_report", "evaluation_figures"], name="build_report"),
        ],
        tags=["evaluation"],
    )
