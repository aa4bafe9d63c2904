"""Optimizer and lr-schedule variants: names that tell the truth, decay split, exact resume."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.training.optimizers import build_optimizer
from isles_diffseg.training.schedulers import build_scheduler

CONF = Path(__file__).parents[2] / "conf" / "base"
PEAK_LR = 1e-3


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4, 1))


def variant(group: str, name: str) -> dict:
    return {"name": name, **load_variant_group(group, CONF)[name]}


def lr_sequence(scheduler, optimizer, steps: int) -> list[float]:
    """The lr each of ``steps`` optimizer steps runs with (the scheduler steps after the optimizer)."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def scheduled(name_or_config: str | dict, max_steps: int):
    config = variant("scheduler", name_or_config) if isinstance(name_or_config, str) else name_or_config
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2, 2))], lr=PEAK_LR)
    return build_scheduler(config, optimizer, max_steps), optimizer


# --------------------------------------------------------------------------- optimizers


def number_in_name(text: str) -> float:
    """``1e4`` -> 1e-4, ``5e5`` -> 5e-5, ``00`` -> 0 (the variant names' shorthand)."""
    if text == "00":
        return 0.0
    mantissa, exponent = text.split("e")
    return float(mantissa) * 10.0 ** -int(exponent)


def test_every_optimizer_variant_has_the_lr_and_weight_decay_its_name_says():
    # The earlier codebase's adamw_5e4lr_wd00 ran at 2e-4; names and values must agree.
    variants = load_variant_group("optimizer", CONF)
    assert set(variants) >= {"adamw_1e4lr_wd00", "adamw_5e5lr_wd00", "adamw_2e4lr_wd00", "adamw_1e3lr_wd1e4"}
    for name, config in variants.items():
        kind, lr_text, wd_text = re.fullmatch(r"([a-z]+)_(\d+e\d+)lr_wd(00|\d+e\d+)", name).groups()
        optimizer = build_optimizer({"name": name, **config}, tiny_model())
        assert config["type"] == kind and type(optimizer).__name__.lower() == kind, name
        assert math.isclose(config["lr"], number_in_name(lr_text), rel_tol=1e-12), name
        assert all(math.isclose(g["lr"], number_in_name(lr_text), rel_tol=1e-12) for g in optimizer.param_groups)
        assert math.isclose(config.get("weight_decay", 0.0), number_in_name(wd_text), rel_tol=1e-12, abs_tol=0), name
        assert config["token"] == f"{kind}{lr_text}_wd{wd_text}", name


def test_weight_decay_spares_biases_and_normalisation_weights():
    model = tiny_model()
    optimizer = build_optimizer({"type": "adamw", "lr": 0.1, "weight_decay": 0.5}, model)
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(decay_of) == len(list(model.parameters()))
    for name, parameter in model.named_parameters():
        assert decay_of[id(parameter)] == (0.5 if parameter.ndim > 1 else 0.0), name
    # With zero gradients AdamW's step is the decay alone: kernels shrink by lr * wd, 1-D params stay.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    for name, parameter in model.named_parameters():
        expected = before[name] * (1 - 0.1 * 0.5) if parameter.ndim > 1 else before[name]
        torch.testing.assert_close(parameter.detach(), expected, msg=name)


def test_frozen_parameters_stay_out_of_the_optimizer():
    model = tiny_model()
    model[0].requires_grad_(False)
    optimizer = build_optimizer({"type": "adamw", "lr": 1e-4}, model)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}


def test_adam_and_sgd_take_their_own_settings():
    adam = build_optimizer({"type": "adam", "lr": 2e-4, "betas": [0.5, 0.99], "eps": 1e-6}, tiny_model())
    assert isinstance(adam, torch.optim.Adam) and not isinstance(adam, torch.optim.AdamW)
    assert adam.defaults["betas"] == (0.5, 0.99) and adam.defaults["eps"] == 1e-6
    sgd = build_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True}, tiny_model().parameters())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "adamax", "lr": 1e-4}, r"type must be one of \['adamw', 'adam', 'sgd'\]"),
        ({"type": "adamw", "lr": "1e-4"}, r"lr must be a finite number, got '1e-4'"),
        ({"type": "adamw", "lr": -1e-4}, r"lr must be > 0"),
        ({"type": "adamw"}, r"lr is required"),
        ({"type": "adamw", "lr": 1e-4, "weight_decay": -0.01}, r"weight_decay must be >= 0"),
        ({"type": "adamw", "lr": 1e-4, "betas": [0.9, 1.0]}, r"betas must be two numbers in \[0, 1\)"),
        ({"type": "sgd", "lr": 1e-2, "betas": [0.9, 0.99]}, r"unknown keys \['betas'\] for type 'sgd'"),
        ({"type": "adamw", "lr": 1e-4, "momentun": 0.9}, r"unknown keys \['momentun'\]"),
    ],
)
def test_bad_optimizer_configs_name_the_offending_key(config, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer({"name": "bad", **config}, tiny_model())


# --------------------------------------------------------------------------- schedulers


def test_every_scheduler_variant_builds_and_carries_its_token():
    variants = load_variant_group("scheduler", CONF)
    expected = {"constant": "const", "warmup_cosine_10pct": "wcos10", "warmup_cosine_5pct": "wcos5",
                "warmup_1000steps_cosine": "w1000cos", "warmup_500steps_constant": "w500const"}
    assert {name: variants[name]["token"] for name in expected} == expected
    for name in variants:
        scheduler, optimizer = scheduled(name, max_steps=5000)
        assert all(0 < lr <= PEAK_LR for lr in lr_sequence(scheduler, optimizer, 20)), name


def test_warmup_cosine_10pct_rises_linearly_then_follows_half_a_cosine_to_zero():
    scheduler, optimizer = scheduled("warmup_cosine_10pct", max_steps=1000)
    lrs = lr_sequence(scheduler, optimizer, 1000)
    assert 0 < lrs[0] <= 0.02 * PEAK_LR  # small but not 0: the first step is not wasted
    warmup = torch.tensor(lrs[:101])
    steps = torch.diff(warmup)
    torch.testing.assert_close(steps, steps.mean().expand_as(steps))  # linear
    assert lrs[100] == pytest.approx(PEAK_LR) and max(lrs) == pytest.approx(PEAK_LR)
    assert lrs[99] < PEAK_LR
    assert lrs[550] == pytest.approx(PEAK_LR / 2, rel=1e-6)  # half-way through the cosine
    assert lrs[325] == pytest.approx(PEAK_LR * (1 + math.cos(math.pi / 4)) / 2, rel=1e-6)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))
    assert lrs[-1] < 1e-4 * PEAK_LR
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)  # at max_steps


def test_absolute_warmup_does_not_depend_on_run_length():
    short, long = (lr_sequence(*scheduled("warmup_1000steps_cosine", max_steps=n), 1001) for n in (4000, 8000))
    assert short[1000] == pytest.approx(PEAK_LR) == long[1000]
    assert short[:1000] == long[:1000] and short[999] < PEAK_LR


def test_warmup_constant_holds_the_peak_after_warmup_and_constant_never_moves():
    lrs = lr_sequence(*scheduled("warmup_500steps_constant", max_steps=800), 800)
    assert lrs[0] < 0.02 * PEAK_LR and lrs[499] < PEAK_LR
    assert lrs[500:] == [pytest.approx(PEAK_LR)] * 300
    assert lr_sequence(*scheduled("constant", max_steps=50), 50) == [PEAK_LR] * 50


def test_scheduler_state_round_trip_resumes_the_exact_lr_sequence():
    model = tiny_model()
    config = {**variant("scheduler", "warmup_cosine_10pct"), "min_lr_factor": 0.1}
    optimizer = build_optimizer(variant("optimizer", "adamw_1e3lr_wd1e4"), model)
    scheduler = build_scheduler(config, optimizer, max_steps=300)
    lr_sequence(scheduler, optimizer, 47)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    uninterrupted = lr_sequence(scheduler, optimizer, 100)

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # only plain data in the scheduler state
    resumed_optimizer = build_optimizer(variant("optimizer", "adamw_1e3lr_wd1e4"), tiny_model())
    # Built for another run length on purpose: the loaded state, not the new arguments, must win.
    resumed_scheduler = build_scheduler(variant("scheduler", "warmup_cosine_10pct"), resumed_optimizer, max_steps=900)
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed_scheduler.load_state_dict(state["scheduler"])
    assert lr_sequence(resumed_scheduler, resumed_optimizer, 100) == uninterrupted


def test_a_warmup_longer_than_the_run_is_allowed_with_a_warning(caplog):
    # Smoke tests run production schedules for a handful of steps; the lr then just keeps rising.
    with caplog.at_level("WARNING", logger="isles_diffseg.training.schedulers"):
        lrs = lr_sequence(*scheduled("warmup_1000steps_cosine", max_steps=3), 3)
    assert "the lr never reaches its peak" in caplog.text
    assert lrs == pytest.approx([PEAK_LR * (0.01 + 0.99 * s / 1000) for s in range(3)])


@pytest.mark.parametrize(
    ("config", "max_steps", "message"),
    [
        ({"type": "cosine"}, 100, r"type must be one of \['constant', 'warmup_constant', 'warmup_cosine'\]"),
        ({"type": "warmup_cosine", "warmup_steps": 10, "warmup_fraction": 0.1}, 300, r"give exactly one of them"),
        ({"type": "warmup_cosine"}, 300, r"give exactly one of them, got neither"),
        ({"type": "warmup_cosine", "warmup_fraction": 1.5}, 300, r"warmup_fraction must be a number in \[0, 1\)"),
        ({"type": "warmup_cosine", "warmup_steps": 1.5}, 300, r"warmup_steps must be an integer >= 0"),
        ({"type": "warmup_cosine", "warmup_steps": 10, "warmup_start_factor": -0.1}, 300, r"warmup_start_factor"),
        ({"type": "warmup_constant", "warmup_steps": 10, "min_lr_factor": 0.1}, 300, r"unknown keys \['min_lr_factor'\]"),
        ({"type": "constant", "warmup_steps": 10}, 300, r"unknown keys \['warmup_steps'\]"),
        ({"type": "constant"}, 0, r"max_steps must be a positive integer"),
    ],
)
def test_bad_scheduler_configs_name_the_offending_key(config, max_steps, message):
    with pytest.raises(ValueError, match=message):
        scheduled({"name": "bad", **config}, max_steps)
