"""One run of a campaign: a configuration trained and evaluated on one fold, as a requeueable submitit job.

The job runs what a user would type, ``kedro run --pipelines training,evaluation --params ...``, as a child
process. It follows submitit's checkpointing protocol: when SLURM (or the local executor) announces the end
of the job's time or a preemption (SIGUSR2), the child gets SIGINT, the trainer saves ``latest.pt`` and the
``kedro run`` stops; :meth:`FoldRun.checkpoint` then hands submitit this same job to requeue. Whether a
(re)started job trains from scratch, resumes or only evaluates is read from the run folder, so a requeued
job, a crashed job submitted again, or the same campaign command run twice all continue where the run
stopped. The job's MLflow run is created once by the campaign and handed to every attempt, so an attempt
never opens a second one.

With ``nodes > 1`` training is one DDP run across the nodes: every node's task starts torchrun with a c10d
rendezvous at the first node of the allocation (from the SLURM environment, through submitit), running
``python -m isles_diffseg.train``; the first node then evaluates with ``kedro run --pipelines evaluation``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from isles_diffseg.config.params_text import params_text
from isles_diffseg.tracking import RUN_TAG
from isles_diffseg.training.launch import AUTO_RESUME

logger = logging.getLogger(__name__)

RECORD = "training_run.json"  # the finished-run record (isles_diffseg.datasets.training_run_dataset)


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, picklable (it travels to the cluster node in submitit's job file)."""

    project_dir: str
    run_name: str
    params: dict[str, Any]  # --params of the run: the configuration's and data.fold / data.val_fold
    env: str | None = None
    gpus: int = 1  # per node; 0 = CPU
    nodes: int = 1
    rdzv_port: int = 29500
    mlflow_run_id: str | None = None  # this run's MLflow run, a child of the campaign's
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. MLFLOW_TRACKING_URI, the Optuna trial


def run_state(spec: RunSpec) -> tuple[str, Path]:
    """``evaluated`` (its case metrics exist), ``finished`` (training's record written), ``resumable``
    (``latest.pt`` exists) or ``new``; and the run folder."""
    from isles_diffseg.train import load_project_config, parse_params

    project = Path(spec.project_dir)
    params, catalog = load_project_config(project / "conf", spec.env, parse_params(params_text(spec.params)))
    runs, reports = Path(params["training"]["output_dir"]), Path(catalog["saved_case_metrics"]["path"])
    run_dir = (runs if runs.is_absolute() else project / runs) / spec.run_name
    evaluated = (reports if reports.is_absolute() else project / reports) / spec.run_name / "case_metrics.csv"
    if (run_dir / RECORD).is_file() and evaluated.is_file():
        return "evaluated", run_dir
    if (run_dir / RECORD).is_file():
        return "finished", run_dir
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        return "resumable", run_dir
    return "new", run_dir


def kedro_command(spec: RunSpec, state: str) -> list[str]:
    """``kedro run`` of this run: training and evaluation, resuming, or evaluation only once training finished."""
    # resume=auto in every attempt: the parameters (which kedro-mlflow logs into the run's one MLflow run, where
    # they are immutable) stay the same whether an attempt starts the run or continues it from latest.pt
    overrides = {**spec.params, "training.run_name": spec.run_name, "training.resume": AUTO_RESUME,
                 "evaluation.run": spec.run_name, "training.num_gpus": max(spec.gpus, 1)}
    pipelines = "evaluation" if state == "finished" or spec.nodes > 1 else "training,evaluation"
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", pipelines, "--params", params_text(overrides)]
    return command + (["--env", spec.env] if spec.env else [])


def torchrun_command(spec: RunSpec, job_env: Any) -> list[str]:
    """One node's share of a multi-node DDP training: torchrun with a c10d rendezvous at the first node.

    ``job_env`` is submitit's :class:`JobEnvironment` (SLURM_JOB_ID, SLURM_JOB_NODELIST, SLURM_NODEID)."""
    overrides = {**spec.params, "training.run_name": spec.run_name, "training.resume": AUTO_RESUME}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={spec.nodes}",
               f"--nproc_per_node={max(spec.gpus, 1)}", f"--node_rank={job_env.node}", "--rdzv_backend=c10d",
               f"--rdzv_endpoint={job_env.hostnames[0]}:{spec.rdzv_port}", f"--rdzv_id={job_env.job_id}",
               "-m", "isles_diffseg.train", "--params", params_text(overrides)]
    return command + (["--env", spec.env] if spec.env else [])


def _model_mlflow_run(spec: RunSpec) -> str | None:
    """The model's MLflow run under this run's (what the Kedro training node makes; found again on resume)."""
    if not spec.mlflow_run_id:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=spec.extra_env.get("MLFLOW_TRACKING_URI"))
    parent = client.get_run(spec.mlflow_run_id)
    found = client.search_runs([parent.info.experiment_id], filter_string=f"tags.{RUN_TAG} = '{spec.run_name}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(parent.info.experiment_id, run_name=spec.run_name, tags={
        "mlflow.parentRunId": spec.mlflow_run_id, RUN_TAG: spec.run_name}).info.run_id


class FoldRun(submitit.helpers.Checkpointable):
    """The submitit job of one run (see the module docstring); returns a summary of what it did."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.attempts: list[dict[str, Any]] = []  # one entry per start, carried over requeues
        self._process: subprocess.Popen | None = None
        self._watcher: threading.Thread | None = None
        self._signalled = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_process"] = state["_watcher"] = None  # a process does not travel with the requeued job
        return state

    # ---- submitit protocol ----------------------------------------------------------------------
    def __call__(self) -> dict[str, Any]:
        job_env = submitit.JobEnvironment()
        previous = signal.getsignal(signal.SIGUSR2)

        def interrupt_then_previous(signum: int, frame: Any) -> None:
            # Every node's task interrupts its own child (all DDP ranks must save together); submitit's own
            # handler then checkpoints and requeues on the first task only.
            self.interrupt()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGUSR2, interrupt_then_previous)
        try:
            return self.execute(job_env)
        finally:
            signal.signal(signal.SIGUSR2, previous)
            self.interrupt(wait=True)  # nothing of ours outlives the job

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on timeout or preemption: let the run save ``latest.pt``, then requeue this job."""
        self.interrupt(wait=True)
        if self.attempts:
            self.attempts[-1]["ended"] = "requeued"
        logger.warning("Run %s interrupted by the scheduler: requeued, it resumes from its checkpoint",
                       self.spec.run_name)
        return submitit.helpers.DelayedSubmission(self)  # pickled without the process (__getstate__)

    # ---- the run ---------------------------------------------------------------------------------------
    def execute(self, job_env: Any = None) -> dict[str, Any]:
        spec = self.spec
        state, run_dir = run_state(spec)
        attempt = {"attempt": len(self.attempts) + 1, "state": state, "started": time.time()}
        if state == "resumable":
            attempt["resume_step"] = _checkpoint_step(run_dir / "checkpoints" / "latest.pt")
        self.attempts.append(attempt)
        logger.info("Run %s, attempt %d: %s", spec.run_name, attempt["attempt"],
                    {"new": "training", "resumable": f"resuming at step {attempt.get('resume_step')}",
                     "finished": "training finished, evaluating", "evaluated": "done already"}[state])
        if state == "evaluated":  # the campaign command run again: nothing left to do
            attempt["ended"] = "finished"
            return {"run_name": spec.run_name, "run_dir": str(run_dir), "attempts": self.attempts}
        env = {**os.environ, **spec.extra_env, "KEDRO_DISABLE_TELEMETRY": "1"}
        multi_node = spec.nodes > 1
        if multi_node and state != "finished":
            is_first = job_env is None or job_env.global_rank == 0
            model_run = _model_mlflow_run(spec) if is_first else None
            train_env = {**env, **({"MLFLOW_RUN_ID": model_run} if model_run else {})}
            self._run(torchrun_command(spec, job_env), train_env)
            if not is_first:
                return {"run_name": spec.run_name, "node": job_env.node, "attempts": self.attempts}
            state = "finished"
        if spec.mlflow_run_id:
            env["MLFLOW_RUN_ID"] = spec.mlflow_run_id  # the fold's kedro run logs into the campaign's child
        self._run(kedro_command(spec, state), env)
        attempt["ended"] = "finished"
        if spec.mlflow_run_id:
            from mlflow.tracking import MlflowClient

            # kedro-mlflow names the run after its pipelines; the campaign's name is the run name
            MlflowClient(tracking_uri=spec.extra_env.get("MLFLOW_TRACKING_URI")).update_run(
                spec.mlflow_run_id, name=spec.run_name)
        return {"run_name": spec.run_name, "run_dir": str(run_dir), "attempts": self.attempts}

    def _run(self, command: list[str], env: dict[str, str]) -> None:
        logger.info("Run %s: %s", self.spec.run_name, " ".join(command))
        # Its own session, so an interruption reaches every process under it (torchrun ranks too).
        with _sigint_not_ignored_in_children():
            process = subprocess.Popen(command, cwd=self.spec.project_dir, env=env, start_new_session=True)
        # A thread reaps the child; this thread only sleeps. The scheduler's signal handler runs on this thread
        # and waits for the child (checkpoint()): had this thread been inside Popen.wait(), which holds the
        # Popen's wait lock, that nested wait could never reap it.
        watcher = threading.Thread(target=process.wait, daemon=True)
        watcher.start()
        self._process, self._watcher, self._signalled = process, watcher, False
        while watcher.is_alive():
            time.sleep(0.2)
        self._process = self._watcher = None
        if process.returncode != 0:
            raise RuntimeError(f"run {self.spec.run_name}: `{' '.join(command)}` failed with exit code "
                               f"{process.returncode}")

    def interrupt(self, wait: bool = False, grace_s: float = 600.0) -> None:
        """SIGINT, once, to the child's process group (the trainer saves ``latest.pt`` and stops; a second
        SIGINT could cut that save short); with ``wait``, SIGKILL after ``grace_s`` if it has not exited."""
        process, watcher = self._process, self._watcher
        if process is None or watcher is None or not watcher.is_alive():
            return
        if not self._signalled:
            self._signalled = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
        if wait:
            watcher.join(grace_s)
            if watcher.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                watcher.join()


@contextlib.contextmanager
def _sigint_not_ignored_in_children() -> Any:
    """Children started inside take SIGINT (Python: KeyboardInterrupt) even where this process ignores it.

    A campaign started in the background from a script (``cmd &`` or ``nohup cmd &`` in a non-interactive
    shell, as CI jobs and job scripts do) ignores SIGINT, and an ignored signal stays ignored through fork and
    exec, down to the trainer: the scheduler's interruption would then be dropped, training would run to its
    end and the "requeued" job would only find a finished run (what made the requeue test fail in CI). A
    Python-level handler, unlike SIG_IGN, is reset to the default by exec, so while the child is started this
    process swallows SIGINT in a handler of its own and the child starts with the default disposition."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        logger.warning("SIGINT is ignored in this process and the run is started off the main thread: the run "
                       "ignores SIGINT too, so a scheduler's interruption cannot make it save and stop")
        yield
        return
    signal.signal(signal.SIGINT, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _checkpoint_step(path: Path) -> int | None:
    from isles_diffseg.training.checkpoints import load_checkpoint

    try:
        return int(load_checkpoint(path)["step"])
    except Exception:  # an unreadable checkpoint is the trainer's to report when it resumes
        return None
