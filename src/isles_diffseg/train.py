"""Train outside ``kedro run``: the entry point that ``torchrun`` starts once per GPU.

Two ways to call it::

    # what a user types on a multi-GPU node (same parameters as `kedro run --pipelines training`)
    torchrun --standalone --nproc_per_node=4 -m isles_diffseg.train \\
        --params "training.model=medsegdiff_256_4l_16c_6x4a_128t_1btl_large,training.batch_size=32,data.fold=0"

    # what the Kedro training node runs with training.num_gpus > 1 (a staged job description)
    torchrun --standalone --nproc_per_node=4 -m isles_diffseg.train --job job.json

It reads the project's configuration with the same loader settings as Kedro (``settings.py``) but
never starts a Kedro session, so the pipeline is not re-run in every rank. The data pipelines must
have run first (slice store and folds on disk).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from isles_diffseg.data.folds import roles_for_run, split_record
from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.datasets.training_run_dataset import TrainingRunDataset
from isles_diffseg.runtime import resolve_device
from isles_diffseg.training.distributed import init_from_environment
from isles_diffseg.training.launch import TrainingInterrupted, prepare_run, run_in_process
from isles_diffseg.training.run_config import RunConfig

logger = logging.getLogger("isles_diffseg.train")


def parse_params(text: str) -> dict[str, Any]:
    """``"a.b=1,c=x"`` -> nested dict, values parsed like Kedro's ``--params`` (OmegaConf dotlist)."""
    from omegaconf import OmegaConf

    items = [item for item in (text or "").split(",") if item]
    return OmegaConf.to_container(OmegaConf.from_dotlist(items), resolve=True) if items else {}


def load_project_config(conf_source: Path, env: str | None, runtime_params: dict[str, Any]) -> tuple[dict, dict]:
    """Parameters (with ``variants``) and catalog config, as a Kedro session would resolve them."""
    from isles_diffseg import settings
    from isles_diffseg.config.variants import VARIANT_GROUPS

    args = dict(settings.CONFIG_LOADER_ARGS)
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf_source), env=env, runtime_params=runtime_params, **args)
    params = dict(loader["parameters"])
    params["variants"] = {g: loader.get(f"variants_{g}", {}) for g in VARIANT_GROUPS}
    return params, loader["catalog"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, help="staged job description written by the Kedro training node")
    parser.add_argument("--params", default="", help="parameter overrides, as for kedro run --params")
    parser.add_argument("--env", default=None, help="Kedro configuration environment (e.g. gpu)")
    parser.add_argument("--conf-source", type=Path, default=Path("conf"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.job:
        job = json.loads(args.job.read_text())
        store, folds = SliceStore(job["store"]), pd.read_csv(job["folds"])
        config = RunConfig.from_dict(job["config"])
        output_dir = Path(job["output_dir"])
        resume_from = Path(job["resume_from"]) if job["resume_from"] else None
        finished_runs = None  # the Kedro node that staged the job saves the run through its catalog
    else:
        params, catalog = load_project_config(args.conf_source, args.env, parse_params(args.params))
        store = SliceStore(catalog["slice_store"]["path"])
        folds = roles_for_run(pd.read_csv(catalog["case_folds"]["filepath"]), params["data"])
        config, resume_from = prepare_run(store, params["training"], params["variants"], split_record(folds))
        # The catalog's training_run entry (path: ${params:training.output_dir}) is where `kedro run
        # --pipelines evaluation --params evaluation.run=<name>` will look for this run.
        finished_runs = TrainingRunDataset(path=catalog["training_run"]["path"])
        output_dir = Path(catalog["training_run"]["path"])

    dist_ctx = init_from_environment(resolve_device(config.device).type)
    sink = None
    if dist_ctx.is_main and os.environ.get("MLFLOW_RUN_ID"):
        from isles_diffseg.training.mlflow_sink import MlflowSink

        sink = MlflowSink(os.environ["MLFLOW_RUN_ID"])  # the model's run, opened by the Kedro node
    result = run_in_process(store, folds, config, output_dir, resume_from, dist_ctx, sink=sink)
    if dist_ctx.is_main:
        if args.job:  # the launching node reads the outcome (interrupted or not) from here
            Path(job["result"]).write_text(json.dumps(asdict(result), indent=1))
        elif not result.interrupted:
            finished_runs.save(result)  # the finished-run record: evaluation.run=<name> and "latest" find it
    if dist_ctx.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
    if result.interrupted:
        if dist_ctx.is_main:
            logger.error("%s", TrainingInterrupted(result))
        return 130  # the shell's code for "stopped by SIGINT": scripts and SLURM see a failed step
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
