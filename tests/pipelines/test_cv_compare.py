"""`cv.compare` puts other cross-validations (e.g. nnU-Net predictions scored fold by fold with
evaluation.predictions as cv_<name>_fold<k>) beside the model and the threshold rules in the CV report."""

from __future__ import annotations

import pandas as pd
import pytest

from isles_diffseg.evaluation.report import TABLE_METRICS
from isles_diffseg.pipelines.cross_validation.nodes import build_cv_report


def case_table(run: str, fold: int, model_dice: list[float], rule_dice: list[float]) -> pd.DataFrame:
    rows = []
    for method, dices in ((run, model_dice), ("threshold_rule_tmax6", rule_dice)):
        for i, dice in enumerate(dices):
            row = {column: 0.5 for column, _, _ in TABLE_METRICS}
            row.update(method=method, case_id=f"case{fold}{i}", fold=fold, dice=dice, gt_volume_ml=10.0,
                       pred_volume_ml=9.0)
            rows.append(row)
    return pd.DataFrame(rows)


SAVED = {
    "cv_diff_fold0": case_table("cv_diff_fold0", 0, [0.5, 0.7], [0.2, 0.4]),
    "cv_diff_fold1": case_table("cv_diff_fold1", 1, [0.3, 0.5], [0.1, 0.3]),
    "cv_nnunet2d_fold0": case_table("cv_nnunet2d_fold0", 0, [0.9, 0.8], [0.2, 0.4]),
    "cv_nnunet2d_fold1": case_table("cv_nnunet2d_fold1", 1, [0.6, 0.6], [0.1, 0.3]),
    "cv_nnunet2d_fold2": case_table("cv_nnunet2d_fold2", 2, [0.1, 0.1], [0.1, 0.1]),  # a fold not evaluated here
    "diff_other_run": case_table("diff_other_run", 0, [0.0, 0.0], [0.0, 0.0]),
}
LOADERS = {key: (lambda table=table: table) for key, table in SAVED.items()}
LAUNCH = {"name": "diff", "n_folds": 3, "launched": []}


def test_compared_cross_validation_appears_beside_the_model_on_the_same_folds():
    summary, per_fold, pooled, report, _ = build_cv_report(LAUNCH, LOADERS, {"n_folds": 3}, {"compare": "nnunet2d"})
    methods = {row["method"]: row for row in summary.data["methods"]}
    assert set(methods) == {"model", "nnunet2d", "threshold_rule_tmax6"}
    # fold means: model 0.6 and 0.4; nnunet2d 0.85 and 0.6 (its fold 2 is not one of this CV's folds)
    assert methods["model"]["dice_mean"] == pytest.approx(0.5)
    assert methods["nnunet2d"]["dice_mean"] == pytest.approx(0.725)
    assert methods["nnunet2d"]["n_folds"] == 2
    # the rules appear once, from this cross-validation's own folds: fold means 0.3 and 0.2
    assert methods["threshold_rule_tmax6"]["dice_mean"] == pytest.approx(0.25)
    assert "nnunet2d" in report.data
    assert sorted(pooled.data.loc[pooled.data["method"] == "nnunet2d", "fold"].unique()) == [0, 1]


def test_without_compare_the_report_is_unchanged_and_an_unknown_name_is_refused():
    summary = build_cv_report(LAUNCH, LOADERS, {"n_folds": 3}, {"compare": None})[0]
    assert {row["method"] for row in summary.data["methods"]} == {"model", "threshold_rule_tmax6"}
    with pytest.raises(ValueError, match="cv.compare names 'nnunet3d', which has no evaluated fold"):
        build_cv_report(LAUNCH, LOADERS, {"n_folds": 3}, {"compare": "nnunet2d+nnunet3d"})
