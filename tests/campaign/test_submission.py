"""What a campaign submits: the grid, the submitit/sbatch parameters (arrays, multi-node) and the run commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import submitit

from isles_diffseg.campaign.__main__ import main
from isles_diffseg.campaign.executors import Resources, sbatch_script, slurm_minutes, submitit_parameters
from isles_diffseg.campaign.grid import expand, parse_folds, parse_grid
from isles_diffseg.campaign.runs import RunSpec, kedro_command, torchrun_command
from isles_diffseg.config.variants import UnknownVariantError

PROJECT = Path(__file__).resolve().parents[2]
GRID = "training.loss=mse_loss_only|mse_with_aux_light,training.optimizer=adamw_1e4lr_wd00|adamw_5e5lr_wd00"


def directives(script: str) -> set[str]:
    return {line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")}


def test_grid_expands_every_combination_and_keeps_shared_keys():
    configurations = expand(parse_grid(GRID + ",training.max_steps=2000"))
    assert len(configurations) == 4
    assert configurations[1].params == {"training.loss": "mse_loss_only", "training.optimizer": "adamw_5e5lr_wd00",
                                        "training.max_steps": "2000"}
    assert configurations[1].label == "loss=mse_loss_only, optimizer=adamw_5e5lr_wd00"
    assert parse_folds("0-4") == [0, 1, 2, 3, 4] and parse_folds("0+2") == [0, 2] and parse_folds("3") == [3]


@pytest.mark.parametrize(("params", "message"), [
    ("data.fold=1", "--folds"), ("training.num_gpus=2", "--gpus"), ("training.resume=x", "resumes"),
    ("training.loss=a|a", "twice"), ("training.loss=", "empty"), ("loss=a", "dotted"), ("training.loss", "key=value"),
])
def test_bad_grids_are_refused_with_the_fix(params, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(params)


def test_slurm_time_limits_in_sbatch_forms():
    assert slurm_minutes("24:00:00") == 1440 and slurm_minutes("2-00:00:00") == 2880
    assert slurm_minutes("90") == 90 and slurm_minutes("1:30") == 2 and slurm_minutes("1-12") == 2160
    with pytest.raises(ValueError, match="--time"):
        slurm_minutes("two days")


def test_array_of_runs_with_a_parallelism_limit(tmp_path):
    resources = Resources(executor="slurm", gpus=1, parallel=3, time="2-00:00:00", partition="gpu", account="stroke",
                          setup=("module load cuda",))
    script = sbatch_script(resources, "campaign_x", tmp_path, n_jobs=8)
    assert {"--array=0-7%3", "--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=1", "--time=2880",
            "--partition=gpu", "--account=stroke", "--job-name=campaign_x", "--signal=USR2@180",
            "--cpus-per-task=16", "--mem=64G"} <= directives(script)
    assert any(d.startswith("--output=") and "%A_%a" in d for d in directives(script))  # one log per array task
    lines = script.splitlines()
    srun = next(line for line in lines if line.startswith("srun "))
    assert "-m submitit.core._submit" in srun
    assert lines.index("module load cuda") < lines.index(srun)  # the user's setup runs before the job


def test_two_nodes_of_two_gpus_is_one_job_with_one_task_per_node(tmp_path):
    resources = Resources(executor="slurm", nodes=2, gpus=2, parallel=1)
    script = sbatch_script(resources, "campaign_mn", tmp_path, n_jobs=1)
    assert {"--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=2"} <= directives(script)
    assert not any(d.startswith("--array") for d in directives(script))
    assert submitit_parameters(resources, "campaign_mn")["nodes"] == 2


def test_multi_node_torchrun_rendezvous_comes_from_the_slurm_environment(monkeypatch):
    # what SLURM sets in the task of the second node of job 4242 on nodes gpu07 and gpu08
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]",
                       "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
                       "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(key, value)
    job_env = submitit.JobEnvironment()
    spec = RunSpec("/p", "x_c00_fold0", {"training.loss": "mse_loss_only", "data.fold": 0}, nodes=2, gpus=2)
    command = torchrun_command(spec, job_env)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc_per_node=2", "--node_rank=1", "--rdzv_backend=c10d",
            "--rdzv_endpoint=gpu07:29500", "--rdzv_id=4242"} <= set(command)
    assert command[command.index("-m", 3) + 1] == "isles_diffseg.train"
    # every attempt the same: the run continues from its latest.pt when it has one (training.resume=auto)
    assert "training.run_name=x_c00_fold0,training.resume=auto" in command[-1]
    # the first node evaluates once training is done
    assert kedro_command(spec, "finished")[4:6] == ["--pipelines", "evaluation"]


def test_run_commands_train_resume_or_only_evaluate():
    spec = RunSpec("/p", "x_c00_fold0", {"training.loss": "mse_loss_only", "data.fold": 0}, gpus=4, env="isles24")
    new = kedro_command(spec, "new")
    assert new[2:6] == ["kedro", "run", "--pipelines", "training,evaluation"] and new[-2:] == ["--env", "isles24"]
    assert new[new.index("--params") + 1] == ("training.loss=mse_loss_only,data.fold=0,training.run_name=x_c00_fold0,"
                                              "training.resume=auto,evaluation.run=x_c00_fold0,training.num_gpus=4")
    assert kedro_command(spec, "resumable") == new  # same parameters: MLflow's logged params cannot change
    finished = kedro_command(spec, "finished")
    assert finished[5] == "evaluation" and finished[7] == new[7]


def test_dry_run_prints_the_array_and_every_run_without_submitting(capsys, tmp_path):
    args = ["grid", "--name", "dry", "--params", GRID, "--folds", "0-1", "--executor", "slurm", "--parallel", "2",
            "--gpus", "1", "--project-dir", str(PROJECT), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-7%2" in out and '"array_parallelism": 2' in out
    assert out.count("kedro run --pipelines training,evaluation") == 8
    assert not (PROJECT / "data/08_reporting/campaign_dry").exists()


@pytest.mark.parametrize(("extra", "error", "message"), [
    (["--nodes", "2"], ValueError, "--executor slurm"),
    (["--folds", "0-9"], ValueError, "outside"),
    (["--time", "soon"], ValueError, "--time"),
])
def test_bad_campaign_settings_are_refused_before_submitting(extra, error, message):
    with pytest.raises(error, match=message):
        main(["grid", "--name", "bad", "--params", GRID, "--project-dir", str(PROJECT), "--dry-run", *extra])


def test_unknown_variant_names_are_refused_with_the_known_ones():
    with pytest.raises(UnknownVariantError, match="Known loss variants"):
        main(["grid", "--name", "bad", "--params", "training.loss=mse_typo|mse_loss_only", "--project-dir",
              str(PROJECT), "--dry-run"])


def test_resume_auto_needs_the_run_name_it_continues(tmp_path):
    from isles_diffseg.training.launch import prepare_run

    with pytest.raises(ValueError, match="training.run_name"):
        prepare_run(None, {"resume": "auto", "run_name": None, "output_dir": str(tmp_path)}, {})
    with pytest.raises(ValueError, match="run name"):
        prepare_run(None, {"resume": "auto", "run_name": "../elsewhere", "output_dir": str(tmp_path)}, {})
