"""`evaluation.min_component_ml` takes effect from conf/base, `--params` and `conf/local`, and bad values are refused.

The evaluation nodes build their setup with :func:`resolve_setup`; the prediction node hands its
``min_component_ml`` to :func:`to_native` (tests/evaluation/test_evaluation_pieces.py shows what that removes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import project_parameters
from test_compiled_sampling import _trained
from tiny_sampling import model_fixture  # noqa: F401 (fixture)

from isles_diffseg.evaluation.report import markdown_report
from isles_diffseg.evaluation.settings import min_component_ml, resolve_setup

CPU = torch.device("cpu")


def _evaluation_parameters(project: Path, runtime_params: dict | None = None) -> dict:
    return project_parameters(project, runtime_params)["evaluation"]


def _minimum(project: Path, model, runtime_params: dict | None = None) -> float:
    trained, variants = _trained(model)
    return resolve_setup(_evaluation_parameters(project, runtime_params), trained, variants, CPU).min_component_ml


def test_the_minimum_component_volume_from_conf_base_params_and_conf_local(project_copy, model):
    assert _minimum(project_copy, model) == 1.0  # conf/base: as the Tmax rules' masks
    assert _minimum(project_copy, model, {"evaluation": {"min_component_ml": 0}}) == 0.0
    (project_copy / "conf/local/parameters_evaluation.yml").write_text(
        yaml.safe_dump({"evaluation": {"min_component_ml": 2.5}}))
    assert _minimum(project_copy, model) == 2.5
    assert _minimum(project_copy, model, {"evaluation": {"min_component_ml": 0.5}}) == 0.5  # --params wins


@pytest.mark.parametrize("bad", [-1, "one", None, float("nan"), True])
def test_a_bad_minimum_is_refused_naming_the_setting(bad):
    with pytest.raises(ValueError, match=r"evaluation.min_component_ml must be a volume in mL >= 0"):
        min_component_ml(bad)


def _report(**details) -> str:
    """The Markdown report of one case scored by run "r", with ``details`` over a fixed-threshold default."""
    import pandas as pd

    cases = pd.DataFrame({"method": ["r"], "case_id": ["c"], "dice": [0.5], "abs_volume_diff_ml": [1.0],
                          "abs_lesion_count_diff": [0], "lesion_f1": [1.0], "gt_volume_ml": [2.0],
                          "pred_volume_ml": [3.0]})
    defaults = {"n_cases": 1, "split": "test", "fold": 0, "data_root": "d", "threshold": 0.5,
                "threshold_mode": "fixed", "sampling": "5 members"}
    return markdown_report("r", pd.DataFrame(), cases, {**defaults, **details})


def test_the_report_says_whether_the_masks_were_filtered():
    assert "under 1 mL removed" in _report(min_component_ml=1.0)
    assert "No post-processing" in _report(min_component_ml=0.0)


def test_the_report_carries_the_threshold_sweeps_warning():
    note = "the sweep chose 0.8, its largest candidate"
    assert f"Threshold: 0.800 (sweep; note: {note})" in _report(threshold=0.8, threshold_mode="sweep",
                                                                 threshold_note=note)
    assert "Threshold: 0.800 (sweep)." in _report(threshold=0.8, threshold_mode="sweep", threshold_note=None)
