"""From slice store + folds + parameters to a finished :class:`Trainer` run (single process or torchrun).

Kept free of Kedro so the same path serves the Kedro node, the ``isles_diffseg.train`` command and
the tests.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.tracking import ModelRunLogger, flatten, model_run_id
from isles_diffseg.training.checkpoints import load_checkpoint
from isles_diffseg.training.distributed import DistContext
from isles_diffseg.training.mlflow_sink import MlflowSink
from isles_diffseg.training.run_config import RunConfig, check_run_name, resolve_run_config
from isles_diffseg.training.trainer import MetricSink, NullSink, Trainer, TrainingResult
from isles_diffseg.training.validation import select_validation_cases

logger = logging.getLogger(__name__)


def runs_dir(training: Mapping[str, Any]) -> Path:
    """``training.output_dir``: the folder of run folders (conf/base: ``${globals:data_root}/06_models``)."""
    if not training.get("output_dir"):
        raise ValueError("training.output_dir must name the folder of run folders (conf/base/parameters_training.yml)")
    return Path(training["output_dir"])


class TrainingInterrupted(RuntimeError):
    """A run stopped by Ctrl-C (its ``latest.pt`` saved): not a result to evaluate or to call the latest run."""

    def __init__(self, result: TrainingResult):
        self.result = result
        super().__init__(
            f"training run {result.run_name} was interrupted at step {result.steps}; its checkpoint is in "
            f"{Path(result.run_dir) / 'checkpoints' / 'latest.pt'}: resume with training.resume={result.run_name}"
        )


def training_rows(store: SliceStore, folds: pd.DataFrame) -> tuple:
    """Rows of the training cases kept by the lesion-free policy, and the validation case table."""
    if "role" not in folds:
        raise ValueError("case_folds has no 'role' column; re-run the splits pipeline")
    train_cases = set(folds.loc[folds["role"] == "train", "case_id"])
    index = store.index
    rows = index.loc[index["case_id"].isin(train_cases) & index["train_keep"], "row"].to_numpy()
    val = folds[(folds["role"] == "val") & folds["case_id"].isin(store.case_ids)]
    return rows, val


AUTO_RESUME = "auto"  # training.resume=auto: continue training.run_name if it has a latest.pt, else start it


def find_resume_checkpoint(resume: str, output_dir: Path) -> Path:
    """``training.resume``: a checkpoint file, a run folder, or a run name under ``output_dir``."""
    candidate = Path(resume)
    for path in (candidate, candidate / "checkpoints" / "latest.pt", output_dir / resume / "checkpoints" / "latest.pt"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"training.resume={resume!r}: no checkpoint file, run folder or run name under {output_dir}")


def prepare_run(store: SliceStore, training: Mapping[str, Any], variants: Mapping[str, Any],
                split: Mapping[str, Any] | None = None) -> tuple[RunConfig, Path | None]:
    """The run's config (new, or the resumed checkpoint's); ``split`` (folds and cases of each role, see
    :func:`isles_diffseg.data.folds.split_record`) is recorded in it as ``extra.split``."""
    output_dir = runs_dir(training)
    resume = training.get("resume")
    if resume == AUTO_RESUME:
        # The same parameters start a run and continue it after an interruption (campaign jobs that are
        # requeued): MLflow keeps a run's parameters immutable, so the value must not change between attempts.
        if not training.get("run_name"):
            raise ValueError(f"training.resume={AUTO_RESUME} continues training.run_name: set training.run_name")
        latest = output_dir / check_run_name(training["run_name"]) / "checkpoints" / "latest.pt"
        resume = str(latest) if latest.is_file() else None
    if resume:
        checkpoint = find_resume_checkpoint(str(resume), output_dir)
        config = RunConfig.from_dict(load_checkpoint(checkpoint)["config"])
        if training.get("max_steps"):
            config.recipe["max_steps"] = int(training["max_steps"])  # extending a run is allowed
        recorded = config.extra.get("split")
        if split is not None and recorded is not None and _folds_of(recorded) != _folds_of(split):
            raise ValueError(f"training.resume={training['resume']}: the run was trained with (n_folds, data.fold, "
                             f"data.val_fold) {_folds_of(recorded)}, this run asks for {_folds_of(split)}; resume "
                             "with the run's folds")
        if split is not None and recorded is None:
            config.extra["split"] = dict(split)
        return config, checkpoint
    config = resolve_run_config(training, variants, image_channels=store.image_channels, image_size=store.image_size)
    if split is not None:
        config.extra["split"] = dict(split)
    return config, None


def _folds_of(split: Mapping[str, Any]) -> tuple[int, int, int | None]:
    val_fold = split["val_fold"]
    return int(split["n_folds"]), int(split["test_fold"]), None if val_fold is None else int(val_fold)


def run_in_process(
    store: SliceStore, folds: pd.DataFrame, config: RunConfig, output_dir: Path, resume_from: Path | None,
    dist_ctx: DistContext | None = None, sink: MetricSink | None = None,
) -> TrainingResult:
    rows, val = training_rows(store, folds)
    val_cases = select_validation_cases(val, config.recipe.get("val_max_cases"))
    logger.info("Training %s on %d slices of %d cases; validating on %d cases", config.run_name, len(rows),
                folds["role"].eq("train").sum(), len(val_cases))
    sink = sink or NullSink()
    if dist_ctx is None or dist_ctx.is_main:  # only the main rank sees validation results
        from isles_diffseg.campaign.pruning import with_trial_pruning

        sink = with_trial_pruning(sink)  # an Optuna trial of a campaign (environment) reports to its study
    trainer = Trainer(config, store, rows, val_cases, output_dir / config.run_name, sink=sink,
                      dist_ctx=dist_ctx, resume_from=resume_from)
    return trainer.fit()


def launch_training(store: SliceStore, folds: pd.DataFrame, training: Mapping[str, Any], variants: Mapping[str, Any],
                    split: Mapping[str, Any] | None = None) -> TrainingResult:
    """Train in this process, or with ``training.num_gpus > 1`` in a torchrun child (DDP, one process per GPU).

    ``folds`` carries the roles of this run (``role`` column); ``split`` is recorded in the run config."""
    config, resume_from = prepare_run(store, training, variants, split)
    output_dir = runs_dir(training)
    num_gpus = int(training.get("num_gpus") or 1)
    run_id = model_run_id(config.run_name)
    if run_id is not None:
        ModelRunLogger(run_id).params({"run_name": config.run_name, **{f"variant.{k}": v for k, v in config.names.items()},
                                       **flatten(config.to_dict())})
    try:
        if num_gpus <= 1:
            result = run_in_process(store, folds, config, output_dir, resume_from,
                                    sink=MlflowSink(run_id) if run_id else None)
        else:
            result = run_torchrun(store, folds, config, output_dir, resume_from, num_gpus, run_id)
    except BaseException:
        if run_id is not None:
            ModelRunLogger(run_id).finish("FAILED")
        raise
    if run_id is not None:
        ModelRunLogger(run_id).finish("KILLED" if result.interrupted else "FINISHED")
    return result


def run_torchrun(store: SliceStore, folds: pd.DataFrame, config: RunConfig, output_dir: Path,
                 resume_from: Path | None, num_gpus: int, run_id: str | None) -> TrainingResult:
    """Stage the job as JSON and run ``torchrun -m isles_diffseg.train --job``; this process never touches CUDA."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        folds_path = Path(tmp) / "folds.csv"
        folds.to_csv(folds_path, index=False)
        result_file = Path(tmp) / "result.json"
        job.write_text(json.dumps({
            "store": str(store.path.resolve()), "folds": str(folds_path), "config": config.to_dict(),
            "output_dir": str(output_dir.resolve()), "resume_from": str(resume_from) if resume_from else None,
            "result": str(result_file),
        }, default=str))
        env = dict(os.environ)
        if run_id is not None:  # rank 0 logs into the model's MLflow run
            env["MLFLOW_RUN_ID"] = run_id
            env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_gpus}",
                   "-m", "isles_diffseg.train", "--job", str(job)]
        logger.info("Launching %s", " ".join(command))
        process = subprocess.Popen(command, env=env)
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the ranks too (same process group): they save latest.pt and write an interrupted
            # result; killing them now (what subprocess.run does) could cut that checkpoint short.
            logger.warning("Interrupted: waiting for the training processes to save their checkpoint")
            returncode = process.wait()
        if not result_file.is_file():
            raise subprocess.CalledProcessError(returncode, command)
        return TrainingResult(**json.loads(result_file.read_text()))
