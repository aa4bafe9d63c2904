"""Run a tuning campaign with one command, on a SLURM cluster (job arrays, multi-node DDP) or on this machine.

    # every combination x fold, each its own `kedro run --pipelines training,evaluation`
    python -m isles_diffseg.campaign grid --name aux_vs_lr \\
        --params "training.loss=mse_loss_only|mse_with_aux_light,training.optimizer=adamw_1e4lr_wd00|adamw_5e5lr_wd00" \\
        --folds 0-4 --executor slurm --gpus 1 --parallel 8 --time 24:00:00 --partition gpu

    # an Optuna study (pruned on validation Dice), 4 workers sharing it
    python -m isles_diffseg.campaign optuna --space conf/base/search_spaces/lr_scheduler.yml --trials 40 \\
        --workers 4 --storage postgresql://user@db/optuna --executor slurm

    # rebuild the report from whatever has finished
    python -m isles_diffseg.campaign report --name aux_vs_lr

``--dry-run`` prints the submitit parameters, the sbatch script submitit would submit and every run's command.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from isles_diffseg.campaign.driver import Project, grid_campaign, optuna_campaign, report
from isles_diffseg.campaign.executors import EXECUTORS, Resources


def _resources(args: argparse.Namespace) -> Resources:
    parallel = args.parallel if args.parallel is not None else (8 if args.executor == "slurm" else 1)
    return Resources(executor=args.executor, nodes=args.nodes, gpus=args.gpus, cpus_per_task=args.cpus_per_task,
                     mem=args.mem, time=args.time, parallel=parallel, partition=args.partition,
                     account=args.account, constraint=args.constraint, qos=args.qos,
                     max_requeues=args.max_requeues, signal_delay_s=args.signal_delay, setup=tuple(args.setup))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m isles_diffseg.campaign", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", default=None, help="Kedro configuration environment of every run (e.g. isles24)")
    common.add_argument("--project-dir", type=Path, default=Path.cwd())
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("--executor", choices=EXECUTORS, default="local",
                      help="slurm: a job array through submitit; local: submitit's local executor on this machine")
    jobs.add_argument("--nodes", type=int, default=1, help="nodes per run (> 1: one DDP training across them)")
    jobs.add_argument("--gpus", type=int, default=1, help="GPUs per node (0: CPU)")
    jobs.add_argument("--cpus-per-task", type=int, default=16)
    jobs.add_argument("--mem", default="64G")
    jobs.add_argument("--time", default="24:00:00", help="a job's time limit; longer runs requeue and resume")
    jobs.add_argument("--parallel", type=int, default=None, help="jobs at once (default: 8 on SLURM, 1 locally)")
    jobs.add_argument("--partition")
    jobs.add_argument("--account")
    jobs.add_argument("--constraint")
    jobs.add_argument("--qos")
    jobs.add_argument("--setup", action="append", default=[], help="shell line run before each job (repeatable)")
    jobs.add_argument("--max-requeues", type=int, default=10, help="timeouts/preemptions a job may resume after")
    jobs.add_argument("--signal-delay", type=int, default=180,
                      help="seconds before the time limit at which a job saves its checkpoint and requeues")
    jobs.add_argument("--val-fold", default=None, help="data.val_fold of every run (default: the next fold)")
    jobs.add_argument("--dry-run", action="store_true", help="print what would be submitted; submit nothing")
    jobs.add_argument("--no-wait", dest="wait", action="store_false",
                      help="SLURM: return after submitting (build the report later with `report`)")
    commands = root.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("grid", parents=[common, jobs], help="every combination of --params x --folds")
    grid.add_argument("--name", required=True, help="the campaign's name (its runs, report folder and MLflow run)")
    grid.add_argument("--params", required=True,
                      help="kedro --params, alternatives joined by '|': training.loss=a|b,training.max_steps=2000")
    grid.add_argument("--folds", default="0", help="test folds: 0-4, 0+2 or 0 (default 0)")
    grid.add_argument("--with-unet", action="store_true",
                      help="add the project's UNet baseline (unet_baseline.training) as one more configuration")
    study = commands.add_parser("optuna", parents=[common, jobs], help="an Optuna study over a search space")
    study.add_argument("--space", required=True, help="a search space YAML (conf/base/search_spaces/<name>.yml)")
    study.add_argument("--trials", type=int, required=True, help="trials in the study, over all workers")
    study.add_argument("--workers", type=int, default=1, help="jobs that share the study")
    study.add_argument("--storage", default=None,
                       help="Optuna storage URL (default: sqlite in the campaign's report folder; on a cluster, "
                            "an RDB every node reaches)")
    study.add_argument("--name", default=None, help="study and campaign name (default: the space's file name)")
    study.add_argument("--fold", type=int, default=0, help="test fold of every trial (the objective is on its "
                                                            "validation fold)")
    rebuild = commands.add_parser("report", parents=[common], help="rebuild a campaign's report")
    rebuild.add_argument("--name", required=True)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    project = Project.load(args.project_dir, args.env)
    if args.command == "report":
        report(project, args.name)
    elif args.command == "grid":
        result = grid_campaign(project, args.name, args.params, args.folds, _resources(args), args.val_fold,
                               args.with_unet, args.dry_run, args.wait)
        return 1 if any(j["state"] != "COMPLETED" for j in result.get("jobs", []) if "state" in j) else 0
    else:
        result = optuna_campaign(project, args.space, args.trials, _resources(args), args.name, args.workers,
                                 args.storage, args.fold, args.val_fold, args.dry_run, args.wait)
        return 1 if any(j["state"] != "COMPLETED" for j in result.get("jobs", []) if "state" in j) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
