from kedro.pipeline import Node, Pipeline

from isles_diffseg.pipelines.comparison.nodes import compare_runs, compare_saved_runs


def create_pipeline(**kwargs) -> Pipeline:
    """Compare every evaluated run on disk (or those named in comparison.runs)."""
    return Pipeline(
        [Node(compare_saved_runs, ["saved_evaluation_summaries", "params:comparison"],
              ["run_comparison", "run_comparison_report"], name="compare_saved_runs")],
        tags=["comparison"],
    )


def create_demo_comparison() -> Pipeline:
    """The demo chain's last step: its diffusion run vs the UNet baseline vs the threshold rules."""
    return Pipeline(
        [Node(compare_runs, ["evaluation_summary", "unet_baseline_evaluation_summary"],
              ["run_comparison", "run_comparison_report"], name="compare_demo_runs")],
        tags=["comparison"],
    )
