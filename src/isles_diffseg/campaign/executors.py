"""Where a campaign's jobs run: a SLURM job array through submitit, or submitit's local executor.

The resources a user asks for become submitit parameters in one place (:func:`submitit_parameters`), so
``--dry-run`` prints exactly what would be submitted: the parameters and, for SLURM, the sbatch script
rendered by submitit itself. One task per node starts the run (``kedro run``, or torchrun on each node of a
multi-node job), so ``--ntasks-per-node=1`` and the GPUs are per node.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXECUTORS = ("slurm", "local")


def slurm_minutes(text: str) -> int:
    """A SLURM time limit in minutes: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M`` or ``D-H:M:S`` (sbatch's forms)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise ValueError(f"--time {text!r} is not a SLURM time limit like 24:00:00 or 2-00:00:00")
    days, first, second, third = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # H:M:S
        seconds = first * 3600 + second * 60 + third
    elif second is not None:  # M:S
        seconds = first * 60 + second
    else:  # M
        seconds = first * 60
    if seconds <= 0:
        raise ValueError(f"--time {text!r} must be positive")
    return max(1, -(-seconds // 60))


@dataclass(frozen=True)
class Resources:
    executor: str = "local"
    nodes: int = 1
    gpus: int = 1  # per node; 0 = CPU only
    cpus_per_task: int = 16
    mem: str = "64G"
    time: str = "24:00:00"
    parallel: int = 8  # jobs running at once (SLURM: the array's %limit)
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    qos: str | None = None
    max_requeues: int = 10  # timeouts/preemptions a job may be requeued after
    signal_delay_s: int = 180  # SIGUSR2 this long before the time limit: time to save latest.pt
    setup: tuple[str, ...] = field(default_factory=tuple)  # shell lines before the job (module load, ...)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor {self.executor!r}: use one of {', '.join(EXECUTORS)}")
        for name in ("nodes", "cpus_per_task", "parallel"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.gpus < 0:
            raise ValueError(f"--gpus must be >= 0, got {self.gpus}")
        if self.nodes > 1 and self.executor != "slurm":
            raise ValueError("--nodes > 1 needs --executor slurm (the local executor runs on this machine only)")
        if self.nodes > 1 and self.gpus < 1:
            raise ValueError("--nodes > 1 trains with DDP across nodes: give --gpus (per node) >= 1")
        if not re.fullmatch(r"\d+[KMGT]?", self.mem):
            raise ValueError(f"--mem {self.mem!r} is not a SLURM memory size like 64G")
        slurm_minutes(self.time)


def submitit_parameters(resources: Resources, job_name: str) -> dict[str, Any]:
    """The parameters given to the submitit executor (SlurmExecutor or LocalExecutor names)."""
    r = resources
    if r.executor == "local":
        return {"timeout_min": slurm_minutes(r.time), "tasks_per_node": 1, "gpus_per_node": r.gpus,
                "signal_delay_s": r.signal_delay_s}
    parameters: dict[str, Any] = {
        "job_name": job_name, "time": slurm_minutes(r.time), "nodes": r.nodes, "ntasks_per_node": 1,
        "cpus_per_task": r.cpus_per_task, "mem": r.mem, "signal_delay_s": r.signal_delay_s,
        "array_parallelism": r.parallel, "stderr_to_stdout": True,
        # the jobs log nothing to the project's telemetry; the user's own lines (module load ...) come first
        "setup": [*r.setup, "export KEDRO_DISABLE_TELEMETRY=1"],
    }
    if r.gpus:
        parameters["gpus_per_node"] = r.gpus
    parameters.update({k: v for k, v in (("partition", r.partition), ("account", r.account),
                                          ("constraint", r.constraint), ("qos", r.qos)) if v})
    return parameters


def sbatch_script(resources: Resources, job_name: str, folder: Path, n_jobs: int) -> str:
    """The sbatch script submitit writes for these jobs (an array when there are several), without submitting."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own renderer, used by SlurmExecutor

    parameters = submitit_parameters(resources, job_name)
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder / "%j"))])
    return _make_sbatch_string(command=command, folder=folder / "%j", map_count=n_jobs if n_jobs > 1 else None,
                               **parameters)


def make_executor(resources: Resources, folder: Path, job_name: str) -> Any:
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    if resources.executor == "slurm":
        executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=resources.max_requeues)
    else:
        executor = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=resources.max_requeues)
    executor.update_parameters(**submitit_parameters(resources, job_name))
    return executor


def submit(executor: Any, resources: Resources, jobs: Sequence[Callable[[], Any]],
           on_submit: Callable[[int, Any], None] | None = None) -> list[Any]:
    """SLURM: one job array (``--array=0-N%parallel``). Local: ``parallel`` jobs at a time, each submitted when
    a slot frees (the local executor has no array limit of its own); returns when the last has finished."""
    if resources.executor == "slurm":
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
        for index, job in enumerate(submitted):
            if on_submit:
                on_submit(index, job)
        return submitted
    submitted: list[Any] = []
    running: dict[int, Any] = {}  # slot -> job; slot k uses GPUs k*gpus .. (k+1)*gpus-1 of this machine
    for index, job in enumerate(jobs):
        while len(running) >= resources.parallel:
            running = {slot: j for slot, j in running.items() if not j.done()}
            time.sleep(0.5)
        slot = min(set(range(resources.parallel)) - set(running))
        if resources.gpus:  # parallel local jobs on different GPUs, not all on the first ones
            executor.update_parameters(visible_gpus=tuple(range(slot * resources.gpus, (slot + 1) * resources.gpus)))
        handle = executor.submit(job)
        if on_submit:
            on_submit(index, handle)
        submitted.append(handle)
        running[slot] = handle
    for handle in submitted:
        handle.wait()
    return submitted


def outcome(job: Any) -> dict[str, Any]:
    """What a finished submitit job returned, or why it failed (its log names the error)."""
    try:
        return {"job_id": job.job_id, "state": "COMPLETED", "result": job.result()}
    except Exception as exc:  # a failed run must not hide the others: the report says which failed
        # submitit's message holds the job's traceback; its last "...Error: message" line says what failed
        errors = re.findall(r"^\w*(?:Error|Exception|Pruned)\b.*$", str(exc), flags=re.MULTILINE)
        return {"job_id": job.job_id, "state": "FAILED", "error": (errors[-1] if errors else str(exc))[:500],
                "log": str(job.paths.stdout)}
