"""The torchrun entry point's parameter handling (SLURM submission: tests/campaign)."""

from __future__ import annotations

from isles_diffseg.train import parse_params


def test_params_parse_like_kedro_run():
    assert parse_params("training.max_steps=500000,training.amp=bf16,data.fold=0,training.lr=1e-4") == {
        "training": {"max_steps": 500000, "amp": "bf16", "lr": 1e-4}, "data": {"fold": 0}}
    assert parse_params("") == {}
