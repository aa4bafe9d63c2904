"""The SLURM script writer and the torchrun entry point's parameter handling."""

from __future__ import annotations

import pytest

from isles_diffseg.slurm import SlurmResources, build_sbatch_script, main
from isles_diffseg.train import parse_params


def test_sbatch_script_runs_the_training_pipeline_on_n_gpus_of_one_node(tmp_path):
    script = build_sbatch_script(
        SlurmResources(gpus=4, cpus_per_task=32, mem="256G", time="2-00:00:00", partition="gpu", account="stroke"),
        "training.model=medsegdiff_256_4l_16c_6x4a_128t_1btl_large,data.fold=2", tmp_path / "project dir", env="gpu",
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--nodes=1", "--gpus-per-node=4", "--cpus-per-task=32", "--mem=256G", "--time=2-00:00:00",
                      "--partition=gpu", "--account=stroke"):
        assert f"#SBATCH {directive}" in lines
    assert not any(line.startswith("#SBATCH --constraint") for line in lines)
    assert f"cd '{tmp_path / 'project dir'}'" in lines
    assert lines[-1] == ("kedro run --pipelines training --params training.model=medsegdiff_256_4l_16c_6x4a_128t_1btl_"
                         "large,data.fold=2,training.num_gpus=4 --env gpu")


def test_bad_resources_and_duplicate_gpu_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--time"):
        SlurmResources(time="two days")
    with pytest.raises(ValueError, match="--gpus"):
        SlurmResources(gpus=0)
    with pytest.raises(ValueError, match="training.num_gpus"):
        build_sbatch_script(SlurmResources(), "training.num_gpus=2", tmp_path)


def test_command_writes_the_script_without_submitting(tmp_path, capsys):
    out = tmp_path / "job.sbatch"
    assert main(["--gpus", "2", "--params", "data.fold=1", "--project-dir", str(tmp_path), "--output", str(out)]) == 0
    assert "training.num_gpus=2" in out.read_text() and f"wrote {out}" in capsys.readouterr().out


def test_params_parse_like_kedro_run():
    assert parse_params("training.max_steps=500000,training.amp=bf16,data.fold=0,training.lr=1e-4") == {
        "training": {"max_steps": 500000, "amp": "bf16", "lr": 1e-4}, "data": {"fold": 0}}
    assert parse_params("") == {}
