from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.cross_validation.nodes import build_cv_report, train_and_evaluate_folds


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(train_and_evaluate_folds, ["case_folds", "run_folders", "params:data", "params:training",
                                            "params:cv"], "cv_launch", name="train_and_evaluate_folds"),
            Node(build_cv_report, ["cv_launch", "saved_case_metrics", "params:data", "params:cv"],
                 ["cv_summary", "cv_fold_metrics", "cv_case_metrics", "cv_report", "cv_figures"],
                 name="build_cv_report"),
        ],
        tags=["cross_validation"],
    )
