"""Write (and optionally submit) an sbatch script that runs the training pipeline on N GPUs of one node.

    python -m isles_diffseg.slurm --gpus 4 --time 48:00:00 --partition gpu \\
        --params "training.model=medsegdiff_256_4l_16c_6x4a_128t_1btl_large,training.recipe=train_100Kms_ampbfloat16,data.fold=0" \\
        [--env gpu] [--submit]

The job runs ``kedro run --pipelines training`` inside the allocation with ``training.num_gpus=N``,
so it is the very same node as on a workstation: it launches torchrun (DDP, one process per GPU)
and logs into the same MLflow store.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")


@dataclass(frozen=True)
class SlurmResources:
    gpus: int = 1
    cpus_per_task: int = 16
    mem: str = "64G"
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    job_name: str = "isles_diffseg_training"

    def __post_init__(self):
        if self.gpus < 1:
            raise ValueError(f"--gpus must be >= 1, got {self.gpus}")
        if self.cpus_per_task < 1:
            raise ValueError(f"--cpus-per-task must be >= 1, got {self.cpus_per_task}")
        if not _TIME.match(self.time):
            raise ValueError(f"--time {self.time!r} is not a SLURM time limit like 48:00:00 or 2-00:00:00")
        if not re.match(r"^\d+[KMGT]?$", self.mem):
            raise ValueError(f"--mem {self.mem!r} is not a SLURM memory size like 64G")


def build_sbatch_script(resources: SlurmResources, params: str, project_dir: Path, env: str | None = None,
                        venv: str = ".venv") -> str:
    if "training.num_gpus" in params:
        raise ValueError("set the GPU count with --gpus, not training.num_gpus in --params")
    overrides = ",".join(p for p in (params.strip(","), f"training.num_gpus={resources.gpus}") if p)
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name={resources.job_name}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={resources.gpus}",
        f"#SBATCH --cpus-per-task={resources.cpus_per_task}",
        f"#SBATCH --mem={resources.mem}",
        f"#SBATCH --time={resources.time}",
        "#SBATCH --output=logs/slurm/%x-%j.out",
    ]
    header += [f"#SBATCH --{key}={value}" for key, value in
               (("partition", resources.partition), ("account", resources.account), ("constraint", resources.constraint))
               if value]
    command = ["kedro", "run", "--pipelines", "training", "--params", overrides]
    if env:
        command += ["--env", env]
    body = [
        "set -euo pipefail",
        f"cd {shlex.quote(str(project_dir))}",
        "mkdir -p logs/slurm",
        "export KEDRO_DISABLE_TELEMETRY=1",
        f"if [ -f {venv}/bin/activate ]; then source {venv}/bin/activate; fi",
        'echo "job $SLURM_JOB_ID on $(hostname): $SLURM_GPUS_ON_NODE GPU(s)"',
        shlex.join(command),
    ]
    return "\n".join(header + [""] + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--cpus-per-task", type=int, default=16)
    parser.add_argument("--mem", default="64G")
    parser.add_argument("--time", default="24:00:00")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--constraint")
    parser.add_argument("--job-name", default="isles_diffseg_training")
    parser.add_argument("--params", default="", help="kedro run --params overrides for the training pipeline")
    parser.add_argument("--env", help="Kedro configuration environment, e.g. gpu")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    parser.add_argument("--output", type=Path, help="where to write the script (default logs/slurm/<job>.sbatch)")
    parser.add_argument("--submit", action="store_true", help="submit with sbatch after writing")
    args = parser.parse_args(argv)
    resources = SlurmResources(args.gpus, args.cpus_per_task, args.mem, args.time, args.partition, args.account,
                               args.constraint, args.job_name)
    script = build_sbatch_script(resources, args.params, args.project_dir.resolve(), args.env)
    output = args.output or args.project_dir / "logs" / "slurm" / f"{args.job_name}.sbatch"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(script)
    print(f"wrote {output}")
    if args.submit:
        completed = subprocess.run(["sbatch", str(output)], capture_output=True, text=True)
        print(completed.stdout.strip() or completed.stderr.strip())
        return completed.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
