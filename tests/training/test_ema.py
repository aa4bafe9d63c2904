"""Specification of the EMA of model weights: the update rule, the warm-up of its rate, and resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isles_diffseg.training.ema import ExponentialMovingAverage


def _scalar_model(value: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)


def _ema_value(ema: ExponentialMovingAverage) -> float:
    return ema.model.weight.item()


@pytest.mark.parametrize(("updates", "expected"), [(0, 1 / 10), (1, 2 / 11), (10, 11 / 20), (90, 91 / 100),
                                                   (1000, 0.99)])
def test_warmup_rate_is_one_plus_n_over_ten_plus_n_capped_at_the_rate(updates, expected):
    ema = ExponentialMovingAverage(_scalar_model(0.0), rate=0.99)
    ema.updates = updates
    # (1 + 1000) / (10 + 1000) = 0.9911 > 0.99: the configured rate caps it
    assert ema.current_rate() == pytest.approx(expected)


def test_without_warmup_the_rate_is_constant():
    ema = ExponentialMovingAverage(_scalar_model(0.0), rate=0.9, warmup=False)
    assert ema.current_rate() == 0.9
    ema.updates = 5
    assert ema.current_rate() == 0.9


def test_update_moves_the_average_by_one_minus_rate_towards_the_weights():
    model = _scalar_model(0.0)
    ema = ExponentialMovingAverage(model, rate=0.9, warmup=False)
    _set(model, 1.0)
    ema.update(model)
    assert _ema_value(ema) == pytest.approx(0.9 * 0.0 + 0.1 * 1.0)
    _set(model, 2.0)
    ema.update(model)
    assert _ema_value(ema) == pytest.approx(0.9 * 0.1 + 0.1 * 2.0)
    assert ema.updates == 2


def test_update_during_warmup_uses_the_rate_of_the_current_update_count():
    model = _scalar_model(0.0)
    ema = ExponentialMovingAverage(model, rate=0.9999)
    _set(model, 1.0)
    ema.update(model)  # rate 1/10
    assert _ema_value(ema) == pytest.approx(0.1 * 0.0 + 0.9 * 1.0)
    _set(model, 2.0)
    ema.update(model)  # rate 2/11
    assert _ema_value(ema) == pytest.approx(2 / 11 * 0.9 + 9 / 11 * 2.0)


def test_the_average_is_a_frozen_copy_not_the_model_itself():
    model = _scalar_model(1.0)
    ema = ExponentialMovingAverage(model, rate=0.5)
    _set(model, 5.0)  # without an update the average must not follow
    assert _ema_value(ema) == 1.0
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert not ema.model.training


def test_integer_buffers_are_copied_not_averaged():
    model = nn.BatchNorm1d(1)
    ema = ExponentialMovingAverage(model, rate=0.5, warmup=False)
    model.train()
    model(torch.tensor([[1.0], [3.0]]))  # num_batches_tracked 1, running_mean 0.1 * 2 = 0.2
    ema.update(model)
    assert ema.model.num_batches_tracked.item() == 1
    assert ema.model.running_mean.item() == pytest.approx(0.5 * 0.0 + 0.5 * 0.2)


def test_the_average_follows_after_its_module_is_moved_to_channels_last():
    # the compiled validation sampler may move the averaged module to channels_last, which gives every
    # parameter new storage: later updates must land there, not in tensors taken before the move
    model = nn.Conv2d(1, 2, 3)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ExponentialMovingAverage(model, rate=0.5, warmup=False)
    ema.model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)
    assert torch.all(ema.model.weight == 2.0)


def test_every_tensor_of_a_larger_model_is_averaged_exactly_as_one_lerp_each():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 1, 1), nn.BatchNorm2d(1))
    ema = ExponentialMovingAverage(model, rate=0.9, warmup=False)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[3].running_var.fill_(3.0)
        model[3].num_batches_tracked.fill_(7)
    ema.update(model)
    for name, value in model.state_dict().items():
        expected = start[name].lerp(value, 0.1) if value.dtype.is_floating_point else value
        assert torch.equal(ema.model.state_dict()[name], expected), name


def test_rate_outside_zero_one_is_rejected():
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="EMA rate must be in"):
            ExponentialMovingAverage(_scalar_model(0.0), rate=rate)


def test_state_round_trip_restores_weights_count_and_settings_and_continues_identically():
    model = _scalar_model(0.0)
    ema = ExponentialMovingAverage(model, rate=0.95)
    for value in (1.0, 2.0, 3.0):
        _set(model, value)
        ema.update(model)
    state = ema.state_dict()

    restored = ExponentialMovingAverage(_scalar_model(-7.0), rate=0.5, warmup=False)
    restored.load_state_dict(state)
    assert (restored.updates, restored.rate, restored.warmup) == (3, 0.95, True)
    assert _ema_value(restored) == _ema_value(ema)
    assert restored.current_rate() == pytest.approx(4 / 13)

    _set(model, 4.0)
    ema.update(model)
    restored.update(model)
    assert _ema_value(restored) == _ema_value(ema)



def test_tensors_replaced_after_the_first_update_are_the_ones_averaged_next():
    # where each tensor lives is found once; the tensor itself is looked up at every update
    model = nn.BatchNorm1d(1)
    ema = ExponentialMovingAverage(model, rate=0.5, warmup=False)
    ema.update(model)  # running_mean 0 -> 0
    model.running_mean = torch.tensor([4.0])  # a new buffer object, as a device or layout move makes
    ema.model.running_var = torch.tensor([3.0])  # and on the averaged side
    ema.update(model)
    assert ema.model.running_mean.item() == 2.0
    assert ema.model.running_var.item() == pytest.approx(0.5 * 3.0 + 0.5 * 1.0)


def test_a_parameter_shared_by_two_modules_is_averaged_once():
    shared = nn.Linear(1, 1, bias=False)
    model = nn.Sequential(shared, shared)
    with torch.no_grad():
        shared.weight.fill_(0.0)
    ema = ExponentialMovingAverage(model, rate=0.5, warmup=False)
    with torch.no_grad():
        shared.weight.fill_(4.0)
    ema.update(model)
    assert ema.model[0].weight.item() == 2.0  # one lerp (twice would give 3.0)
