"""The training loop: every variant group runs, resume is exact, non-finite steps are guarded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_tiny_slice_store

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.training.checkpoints import CheckpointFolder, load_checkpoint, save_atomic
from isles_diffseg.training.launch import run_in_process, training_rows
from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config
from isles_diffseg.training.trainer import NonFiniteTrainingError, Trainer

CONF = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}
BASE = {"model": "medsegdiff_tiny_cpu", "loss": "mse_with_aux_demo", "optimizer": "adamw_1e3lr_wd1e4",
        "scheduler": "warmup_cosine_10pct", "augmentation": "light_2d", "diffusion": "ddim10",
        "recipe": "train_test_tiny", "device": "cpu", "seed": 3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_slice_store(tmp_path_factory.mktemp("store") / "slices")


def _config(store, **overrides):
    return resolve_run_config({**BASE, **overrides}, VARIANTS, image_channels=store.image_channels,
                              image_size=store.image_size)


def _trainer(tiny, tmp_path, resume_from=None, **overrides):
    store, folds = tiny
    config = _config(store, run_name="t", **overrides)
    rows, _ = training_rows(store, folds)
    return Trainer(config, store, rows, ["sub-stroke0005"], tmp_path / "t", resume_from=resume_from,
                   show_progress=False)


def _one_factor_at_a_time():
    for group, key in (("loss", "loss"), ("optimizer", "optimizer"), ("scheduler", "scheduler"),
                       ("augmentation", "augmentation"), ("diffusion", "diffusion")):
        for name in sorted(VARIANTS[group]):
            if group == "diffusion" and name in ("ddpm1000", "ddim250"):
                continue  # same code path as ddim10 at 100x the CPU time
            overrides = {key: name}
            if name == "dice_bce":
                overrides["model"] = "unet_baseline_tiny_cpu"
            if name == "mse_with_calibration":
                overrides["model"] = "org_medsegdiff_tiny_cpu"
            yield pytest.param(overrides, id=f"{group}={name}")


@pytest.mark.parametrize("overrides", list(_one_factor_at_a_time()))
def test_every_variant_trains_a_few_finite_steps(tiny, tmp_path, overrides):
    result = _trainer(tiny, tmp_path, **overrides, max_steps=3, val_interval=3).fit()
    assert result.steps == 3 and result.skipped_steps == 0
    assert result.best_metric is not None and 0.0 <= result.best_metric <= 1.0
    assert Path(result.best_checkpoint).is_file()


def test_ctrl_c_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tiny, tmp_path, monkeypatch):
    straight = _trainer(tiny, tmp_path / "a", max_steps=6)
    straight.fit()

    first = _trainer(tiny, tmp_path / "b", max_steps=6)
    real_step = first.train_step

    def interrupted_after_three():
        if first.step == 3:
            raise KeyboardInterrupt
        return real_step()

    monkeypatch.setattr(first, "train_step", interrupted_after_three)
    assert first.fit().interrupted
    resumed = _trainer(tiny, tmp_path / "c", resume_from=first.checkpoints.latest, max_steps=6)
    assert resumed.step == 3
    resumed.fit()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema.model.state_dict().values(), resumed.ema.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert straight.optimizer.state_dict()["state"][0]["step"] == resumed.optimizer.state_dict()["state"][0]["step"]
    assert straight.best_metric == resumed.best_metric and straight.history == resumed.history


def test_non_finite_steps_are_skipped_then_stop_the_run_with_the_checkpoint_intact(tiny, tmp_path, monkeypatch):
    trainer = _trainer(tiny, tmp_path, max_steps=20, val_interval=100, checkpoint_interval=2)
    calls = {"n": 0}
    real_loss = trainer._loss

    def sometimes_nan(image, mask):
        calls["n"] += 1
        losses = real_loss(image, mask)
        if calls["n"] == 3 or calls["n"] >= 6:  # one isolated NaN, then NaNs forever
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(trainer, "_loss", sometimes_nan)
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive non-finite steps"):
        trainer.fit()
    assert trainer.skipped_steps == 4
    state = load_checkpoint(trainer.checkpoints.latest)
    # Skipped steps never touch the weights: the checkpoint holds the last good ones, all finite.
    assert state["step"] == 6 and state["skipped_steps"] == 2
    for name, value in state["model"].items():
        assert torch.isfinite(value).all() and torch.equal(value, trainer.model.state_dict()[name]), name


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_atomic({"step": 1}, path)

    def crash(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_interval_checkpoints_keep_the_last_k(tmp_path):
    folder = CheckpointFolder(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        folder.save_interval({"step": step}, step)
    assert [p.name for p in folder.interval_checkpoints()] == ["step_00000020.pt", "step_00000030.pt"]


def test_run_name_follows_the_earlier_grammar(tiny):
    from datetime import datetime

    store, _ = tiny
    config = resolve_run_config(
        {**BASE, "model": "medsegdiff_256_4l_16c_6x4a_128t_1btl_large", "loss": "mse_with_aux_light",
         "scheduler": "warmup_cosine_10pct", "optimizer": "adamw_1e4lr_wd00", "augmentation": "aggressive_2d",
         "diffusion": "ddim50", "recipe": "train_100Kms_ampbfloat16", "max_steps": 500000, "batch_size": 32},
        VARIANTS, image_channels=2, image_size=256, now=datetime(2025, 12, 14, 15, 30, 0))
    assert config.run_name == (
        "medsegdiff_256_4l_16c_6x4a_128t_1btl_large_b32_ampBF16_adamw1e4_wd00_wcos10_s500K_"
        "lMSE_dw10_d01_b01_w10K_augAGG2D_oai_ddim_ds1000_nzcosine_tr50_2025-12-14_15-30-00"
    )
    assert config.model["image_channels"] == 2 and config.recipe["max_steps"] == 500000


def test_bad_variant_choices_are_clear_errors(tiny):
    store, _ = tiny
    with pytest.raises(KeyError, match="Unknown model variant 'nope'. Known model variants: diffswintr_b"):
        _config(store, model="nope")
    with pytest.raises(ValueError, match="unet_baseline needs a discriminative loss"):
        _config(store, model="unet_baseline_tiny_cpu")
    with pytest.raises(ValueError, match=r"unknown training parameters \['max_stepz'\]"):
        _config(store, max_stepz=3)


def test_training_uses_train_cases_only_and_validates_on_the_val_fold(tiny, tmp_path):
    store, folds = tiny
    rows, val = training_rows(store, folds)
    cases = set(store.index.loc[rows, "case_id"])
    assert cases == set(folds.loc[folds["role"] == "train", "case_id"])
    assert list(val["case_id"]) == ["sub-stroke0005"]
    result = run_in_process(store, folds, _config(store, run_name="r"), tmp_path, None)
    assert np.isfinite(result.best_metric)


@pytest.mark.slow
def test_two_rank_ddp_through_torchrun_on_cpu(tiny, tmp_path):
    from isles_diffseg.training.launch import launch_training

    store, folds = tiny
    result = launch_training(store, folds, {**BASE, "num_gpus": 2, "run_name": "ddp", "output_dir": str(tmp_path)},
                             VARIANTS)
    assert result.steps == 6 and not result.interrupted
    assert [row["step"] for row in result.history] == [3, 6]
    assert Path(result.best_checkpoint).is_file() and len(load_checkpoint(tmp_path / "ddp/checkpoints/latest.pt")["generators"]) == 2


def test_the_trainer_draws_timesteps_from_the_loss_variant(tiny, tmp_path, monkeypatch):
    drawn = []
    for power in (1.0, 4.0):
        trainer = _trainer(tiny, tmp_path / str(power), max_steps=20, val_interval=100, batch_size=16)
        trainer.loss_fn = dataclasses.replace(trainer.loss_fn, timestep_power=power)
        real = trainer.diffusion.training_terms

        def spy(*args, t=None, power=power, real=real, **kwargs):
            drawn.append((power, t))
            return real(*args, t=t, **kwargs)

        monkeypatch.setattr(trainer.diffusion, "training_terms", spy)
        for _ in range(20):
            trainer.train_step()
    means = {p: torch.cat([t for q, t in drawn if q == p]).float().mean().item() for p in (1.0, 4.0)}
    assert means[1.0] == pytest.approx(499.5, abs=40) and means[4.0] == pytest.approx(800, abs=25)


def test_a_validation_announces_its_cost_before_it_starts(tiny, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="isles_diffseg.training.trainer"):
        _trainer(tiny, tmp_path, max_steps=3, val_interval=3).fit()
    started = [r.getMessage() for r in caplog.records if "validating on" in r.getMessage()]
    assert started == ["Step 3: validating on 1 cases (ddim ddim10, 1 member(s) per slice; val_max_cases, "
                       "val_members and the respacing of val_diffusion or the run's diffusion variant set the cost)"]


def test_validation_samples_the_chain_val_diffusion_names_over_the_runs_own_process(tiny, tmp_path, monkeypatch):
    import isles_diffseg.training.trainer as trainer_module

    seen = []
    real_validate = trainer_module.validate

    def spy(model, store, cases, **kwargs):
        seen.append((kwargs["sampler"].respacing, kwargs["members"], kwargs["diffusion"]))
        return real_validate(model, store, cases, **kwargs)

    monkeypatch.setattr(trainer_module, "validate", spy)
    x0_run = {"diffusion": "ddim10_x0_inscale03", "loss": "mse_x0_aux1_t2", "max_steps": 2, "val_interval": 2}
    trainer = _trainer(tiny, tmp_path / "a", **x0_run, val_diffusion="trailing1_x0", val_members=2)
    trainer.fit()
    # the one-step chain at 2 members, over the input-scaled process the run trained on
    assert [(respacing, members) for respacing, members, _ in seen] == [("trailing1", 2)]
    assert seen[0][2] is trainer.diffusion and seen[0][2].alphas_cumprod[500] < 0.1  # unscaled cosine: 0.49
    seen.clear()
    _trainer(tiny, tmp_path / "b", **x0_run).fit()  # null: the run's own variant
    assert [(respacing, members) for respacing, members, _ in seen] == [("ddim10", 1)]


def test_a_val_diffusion_of_another_process_or_an_unknown_name_fails_before_training(tiny):
    store, _ = tiny
    with pytest.raises(ValueError, match=r"training.val_diffusion='ddim50' changes model_output .*\("
                                         r"training.val_diffusion=null samples with the run's own variant"):
        _config(store, diffusion="ddim10_x0", loss="mse_x0_aux1_t2", val_diffusion="ddim50")
    with pytest.raises(KeyError, match="trailing_1"):
        _config(store, diffusion="ddim10_x0", loss="mse_x0_aux1_t2", val_diffusion="trailing_1")


def test_gradient_clipping_acts_on_the_model_parameters_also_after_a_resume(tiny, tmp_path):
    def norms(trainer) -> tuple[float, float]:
        logged = trainer.train_step()["grad_norm"]  # the norm before clipping
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        return logged, float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    first = _trainer(tiny, tmp_path / "a", max_steps=4, grad_clip=1e-3)
    logged, after = norms(first)
    assert logged > 1e-2 and after == pytest.approx(1e-3, rel=1e-3)
    first.save_latest()
    resumed = _trainer(tiny, tmp_path / "b", resume_from=first.checkpoints.latest, max_steps=4, grad_clip=1e-3)
    logged, after = norms(resumed)
    assert resumed.step == 2 and logged > 1e-2 and after == pytest.approx(1e-3, rel=1e-3)


def test_val_thresholds_make_the_trainer_select_checkpoints_on_the_swept_dice(tiny, tmp_path):
    from isles_diffseg.training.validation import ValidationResult

    def validation(fixed: float, swept: float) -> ValidationResult:
        return ValidationResult(pd.DataFrame(), {"val_dice_3d": fixed, "val_dice_3d_swept": swept,
                                                 "val_threshold_swept": 0.8})

    trainer = _trainer(tiny, tmp_path / "swept", max_steps=4, val_thresholds=[0.3, 0.5, 0.8])
    trainer.run_dir.mkdir(parents=True)  # fit() makes it
    trainer.step = 1
    trainer._after_validation(validation(0.6, 0.7))
    trainer.step = 2
    trainer._after_validation(validation(0.9, 0.65))  # better at 0.5, worse as the evaluation would score it
    assert (trainer.best_step, trainer.best_metric) == (1, 0.7)
    assert trainer.history[-1]["best_val_dice_3d_swept"] == 0.7
    assert load_checkpoint(trainer.checkpoints.best, torch.device("cpu"))["metric"] == {"val_dice_3d_swept": 0.7}
    trainer.save_latest()
    with pytest.raises(ValueError, match="selected on val_dice_3d_swept, this run selects on val_dice_3d"):
        _trainer(tiny, tmp_path / "resumed", resume_from=trainer.checkpoints.latest, max_steps=4)

    fixed = _trainer(tiny, tmp_path / "fixed", max_steps=4)  # null: selected on the Dice at 0.5, as before
    fixed.run_dir.mkdir(parents=True)
    fixed.step = 1
    fixed._after_validation(validation(0.6, 0.7))
    fixed.step = 2
    fixed._after_validation(validation(0.9, 0.65))
    assert (fixed.best_step, fixed.best_metric) == (2, 0.9)


def test_a_real_validation_with_val_thresholds_logs_the_swept_dice(tiny, tmp_path):
    result = _trainer(tiny, tmp_path, max_steps=2, val_interval=2, val_thresholds=[0.2, 0.5, 0.8]).fit()
    (record,) = [row for row in result.history if "val_dice_3d" in row]
    assert record["val_threshold_swept"] in (0.2, 0.5, 0.8)
    assert record["val_dice_3d_swept"] >= record["val_dice_3d"] - 1e-12  # 0.5 is one of the candidates
    assert result.selection_metric == "val_dice_3d_swept" and result.best_metric == record["val_dice_3d_swept"]


@pytest.mark.parametrize("value", [[], [0.5, 1.0], [0.0], "0.5", [True], [0.5, "x"]])
def test_bad_val_thresholds_are_refused_before_training(tiny, value):
    store, _ = tiny
    with pytest.raises(ValueError, match=r"training.val_thresholds must be null or a non-empty list"):
        _config(store, val_thresholds=value)
