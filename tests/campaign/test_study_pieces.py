"""Search spaces, the pruning sink and the campaign report, without training (in-memory Optuna studies)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from isles_diffseg.campaign.pruning import TRIAL_ENV, OptunaPruningSink, trial_description, with_trial_pruning
from isles_diffseg.campaign.report import build_report
from isles_diffseg.campaign.space import build_pruner, build_sampler, load_space
from isles_diffseg.training.trainer import NullSink


def write_space(tmp_path, content) -> str:
    path = tmp_path / "space.yml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


SPACE = {"sampler": {"type": "tpe", "seed": 0}, "pruner": {"type": "median", "n_startup_trials": 1},
         "fixed": {"training.max_steps": 100},
         "params": {"training.optimizer": {"type": "categorical", "choices": ["adamw_1e4lr_wd00", "adamw_5e5lr_wd00"]},
                    "training.batch_size": {"type": "int", "low": 8, "high": 32, "step": 8},
                    "training.ema_rate": {"type": "float", "low": 0.99, "high": 0.9999, "log": True}}}


def test_a_trial_becomes_project_params(tmp_path):
    space = load_space(write_space(tmp_path, SPACE))
    study = optuna.create_study(direction="maximize", sampler=build_sampler(space))
    params = space.suggest(study.ask())
    assert params["training.max_steps"] == 100
    assert params["training.optimizer"] in SPACE["params"]["training.optimizer"]["choices"]
    assert params["training.batch_size"] in (8, 16, 24, 32) and 0.99 <= params["training.ema_rate"] <= 0.9999


@pytest.mark.parametrize(("change", "message"), [
    ({"params": {}}, "at least one parameter"),
    ({"params": {"training.loss": {"type": "choice", "choices": ["a"]}}}, "needs 'type'"),
    ({"params": {"training.batch_size": {"type": "int", "low": 32, "high": 8}}}, "low < high"),
    ({"params": {"training.batch_size": {"type": "int", "low": 8, "high": 32, "choices": [1]}}}, "does not take"),
    ({"sampler": {"type": "grid"}}, "must be categorical"),
    ({"pruner": {"type": "median", "patience": 3}}, "MedianPruner"),
    ({"pruner": {"type": "oracle"}}, "pruner type"),
    ({"fixed": {"data.fold": 1}}, "--folds"),
    ({"fixed": {"training.max_steps": 1}, "params": {"training.max_steps": {"type": "categorical", "choices": [1]}}},
     "both fixed and searched"),
])
def test_bad_search_spaces_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_space(write_space(tmp_path, {**SPACE, **change}))


class Recorder(NullSink):
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append((step, dict(metrics)))


def test_pruning_sink_reports_each_validation_and_stops_a_pruned_trial(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=build_pruner({"type": "threshold", "lower": 0.5}))
    trial = study.ask()
    inner, marker = Recorder(), tmp_path / "pruned" / "run.json"
    sink = OptunaPruningSink(inner, trial, marker)
    sink.log_metrics({"train_loss": 1.0}, 1)  # training metrics pass through, nothing reported
    sink.log_metrics({"val_dice_3d": 0.7}, 10)
    with pytest.raises(optuna.TrialPruned):
        sink.log_metrics({"val_dice_3d": 0.2}, 20)
    assert [step for step, _ in inner.logged] == [1, 10, 20]  # the inner sink saw everything
    assert study.trials[0].intermediate_values == {10: 0.7, 20: 0.2}
    assert json.loads(marker.read_text()) == {"step": 20, "val_dice_3d": 0.2}


def test_training_finds_its_trial_through_the_environment(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    inner = Recorder()
    assert with_trial_pruning(inner) is inner  # not a trial: the sink is left alone
    monkeypatch.setenv(TRIAL_ENV, trial_description(storage, "s", trial._trial_id, {"type": "none"},
                                                     tmp_path / "m.json"))
    sink = with_trial_pruning(inner)
    sink.log_metrics({"val_dice_3d": 0.4}, 5)
    assert optuna.load_study(study_name="s", storage=storage).trials[0].intermediate_values == {5: 0.4}


def case_metrics(run_name: str, dice: list[float], rule_dice: float) -> pd.DataFrame:
    rows = []
    for i, value in enumerate(dice):
        base = {"case_id": f"c{i}", "abs_volume_diff_ml": 1.0, "abs_lesion_count_diff": 0, "lesion_f1": value,
                "dice_2d_lesion": value, "dice_2d_all": value, "hd95_mm": 3.0, "precision": value, "recall": value,
                "gt_volume_ml": 5.0, "pred_volume_ml": 4.0}
        rows.append({**base, "method": run_name, "dice": value})
        rows.append({**base, "method": "threshold_rule_tmax6", "dice": rule_dice})
        rows.append({**base, "method": "threshold_rule_tmax6_rcbf30", "dice": rule_dice / 2})
    return pd.DataFrame(rows)


def test_report_one_row_per_configuration_mean_sd_over_folds_with_rules_and_unet(tmp_path):
    reporting = tmp_path / "08_reporting"
    dice = {("c00", 0): [0.6, 0.8], ("c00", 1): [0.4, 0.4], ("unet", 0): [0.5, 0.5], ("unet", 1): [0.3, 0.5]}
    for (key, fold), values in dice.items():
        folder = reporting / f"x_{key}_fold{fold}"
        folder.mkdir(parents=True)
        case_metrics(f"x_{key}_fold{fold}", values, rule_dice=0.1 * (fold + 1)).to_csv(
            folder / "case_metrics.csv", index=False)
    configurations = [{"key": "c00", "label": "loss=a"}, {"key": "unet", "label": "UNet baseline"}]
    runs = [{"run_name": f"x_{k}_fold{f}", "configuration": k, "fold": f} for k in ("c00", "unet") for f in (0, 1, 2)]
    result = build_report({"name": "x", "kind": "grid"}, configurations, runs, reporting)

    summary = pd.read_csv(reporting / "campaign_x/campaign_summary.csv").set_index("method")
    assert list(summary.index) == ["c00", "unet", "threshold_rule_tmax6", "threshold_rule_tmax6_rcbf30"]
    assert summary.loc["c00", "dice_mean"] == pytest.approx(np.mean([0.7, 0.4]))
    assert summary.loc["c00", "dice_sd"] == pytest.approx(np.std([0.7, 0.4], ddof=1))
    assert summary.loc["unet", "label"] == "UNet baseline" and summary.loc["unet", "n_folds"] == 2
    # each fold's rule rows are counted once, not once per configuration
    assert summary.loc["threshold_rule_tmax6", "n_cases"] == 4
    assert summary.loc["threshold_rule_tmax6", "dice_mean"] == pytest.approx(0.15)
    assert result["runs_not_evaluated"] == ["x_c00_fold2", "x_unet_fold2"]
    report = (reporting / "campaign_x/campaign_report.md").read_text()
    assert "Runs evaluated: 4 of 6 (not evaluated: x_c00_fold2, x_unet_fold2)" in report
    assert "| c00 | loss=a | 2 | 4 | 0.550 ± 0.212 |" in report
    assert (reporting / "campaign_x/figures/metric_by_configuration.png").stat().st_size > 0


def test_report_of_a_study_has_trials_history_and_importances(tmp_path):
    study = optuna.create_study(direction="maximize")
    distributions = {"training.optimizer": optuna.distributions.CategoricalDistribution(["a", "b"]),
                     "training.batch_size": optuna.distributions.IntDistribution(8, 32)}
    for optimizer, batch, value in (("a", 8, 0.3), ("b", 16, 0.5), ("a", 32, 0.4), ("b", 8, 0.6)):
        study.add_trial(optuna.trial.create_trial(
            params={"training.optimizer": optimizer, "training.batch_size": batch}, distributions=distributions,
            value=value))
    pruned = study.ask()
    pruned.report(0.1, 3)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    build_report({"name": "s", "kind": "optuna"}, [], [], tmp_path, study=study,
                 run_of_trial={t.number: f"s_t{t.number:03d}_fold0" for t in study.trials})
    trials = pd.read_csv(tmp_path / "campaign_s/optuna_trials.csv")
    assert sorted(trials["state"]) == ["COMPLETE"] * 4 + ["PRUNED"]
    assert trials.loc[trials["state"] == "PRUNED", "last_validation_step"].item() == 3
    for figure in ("optuna_history.png", "optuna_importances.png"):
        assert (tmp_path / "campaign_s/figures" / figure).stat().st_size > 0
    assert "Best: trial 3, 0.6000" in (tmp_path / "campaign_s/campaign_report.md").read_text()


def test_workers_can_tell_the_grid_samplers_last_point(tmp_path):
    from isles_diffseg.campaign.study import _tell

    space = load_space(write_space(tmp_path, {**SPACE, "sampler": {"type": "grid"}, "params": {
        "training.optimizer": {"type": "categorical", "choices": ["adamw_1e4lr_wd00", "adamw_5e5lr_wd00"]}}}))
    study = optuna.create_study(direction="maximize", sampler=build_sampler(space))
    for value in (0.1, 0.2):  # the second tell exhausts the grid: GridSampler calls Study.stop()
        trial = study.ask()
        space.suggest(trial)
        _tell(study, trial, value)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert {t.params["training.optimizer"] for t in study.trials} == {"adamw_1e4lr_wd00", "adamw_5e5lr_wd00"}


def test_a_run_that_sweeps_its_validation_threshold_is_pruned_on_the_swept_dice(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=build_pruner({"type": "threshold", "lower": 0.5}))
    trial = study.ask()
    sink = OptunaPruningSink(Recorder(), trial, tmp_path / "m.json")
    sink.log_metrics({"val_dice_3d": 0.3, "val_dice_3d_swept": 0.7}, 10)  # below the bar at 0.5, above swept
    with pytest.raises(optuna.TrialPruned, match="val_dice_3d_swept=0.4"):
        sink.log_metrics({"val_dice_3d": 0.9, "val_dice_3d_swept": 0.4}, 20)
    assert study.trials[0].intermediate_values == {10: 0.7, 20: 0.4}
