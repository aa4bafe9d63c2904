"""A campaign from start to report: plan the runs, open the MLflow runs, submit, wait, report.

The plan is written to ``data/08_reporting/campaign_<name>/campaign.json`` before anything is submitted.
Running the same command again continues the campaign: finished runs are only re-evaluated if their
evaluation is missing, interrupted ones resume from ``latest.pt``, and the MLflow runs are found again. A
different plan under the same name is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from isles_diffseg.campaign.executors import Resources, make_executor, outcome, sbatch_script, submit
from isles_diffseg.campaign.grid import (
    Configuration,
    check_folds,
    check_name,
    check_variant_names,
    expand,
    parse_folds,
    parse_grid,
    run_name,
)
from isles_diffseg.campaign.report import build_report
from isles_diffseg.campaign.runs import FoldRun, RunSpec, kedro_command, torchrun_command
from isles_diffseg.campaign.space import grid_size, load_space
from isles_diffseg.campaign.study import StudySettings, StudyWorker, load_study, trial_run_name
from isles_diffseg.campaign.tracking import CampaignTracker, mlflow_settings

logger = logging.getLogger(__name__)

UNET_KEY = "unet"


@dataclass(frozen=True)
class Project:
    path: Path
    env: str | None
    params: dict[str, Any]
    reporting_dir: Path

    @classmethod
    def load(cls, path: Path, env: str | None) -> Project:
        from isles_diffseg.train import load_project_config

        path = Path(path).resolve()
        if not (path / "conf").is_dir():
            raise FileNotFoundError(f"--project-dir {path} has no conf/ folder: run from the project root")
        params, catalog = load_project_config(path / "conf", env, {})
        reporting = Path(catalog["saved_case_metrics"]["path"])
        return cls(path, env, params, reporting if reporting.is_absolute() else path / reporting)

    @property
    def n_folds(self) -> int:
        return int(self.params["data"]["n_folds"])

    def campaign_dir(self, name: str) -> Path:
        return self.reporting_dir / f"campaign_{name}"


def _val_fold(text: str | None) -> Any:
    if text is None or str(text).lower() == "null":
        return None
    if str(text).lower() == "none":
        return "none"
    return int(text)


def unet_configuration(project: Project, shared: dict[str, str], index: int) -> Configuration:
    """The project's UNet baseline (``unet_baseline.training`` variants) as one more configuration; the
    campaign's single-valued recipe settings (e.g. ``training.max_steps``) apply to it too."""
    from isles_diffseg.training.run_config import GROUP_OF_KEY

    unet = project.params.get("unet_baseline", {}).get("training", {})
    if not unet.get("model"):
        raise ValueError("--with-unet: the project's parameters have no unet_baseline.training.model")
    run_keys = {"seed", "device", "num_gpus", "resume", "run_name", "output_dir"}  # the campaign's, not the UNet's
    params = {f"training.{k}": str(v) for k, v in unet.items()
              if v is not None and k not in run_keys and not isinstance(v, (dict, list))}
    params.update({k: v for k, v in shared.items() if k.removeprefix("training.") not in GROUP_OF_KEY})
    return Configuration(index, params, {"model": str(unet.get("model"))})


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.json"
    if path.is_file():
        old = json.loads(path.read_text())
        for key in ("kind", "configurations", "folds", "val_fold", "env", "space"):
            if old.get(key) != manifest.get(key):
                raise ValueError(f"campaign {manifest['name']!r} exists ({path}) with another {key}: "
                                 f"{old.get(key)!r} != {manifest.get(key)!r}; choose another --name")
        manifest = {**old, **manifest, "created": old.get("created", manifest.get("created"))}
    path.write_text(json.dumps(manifest, indent=1, default=str))


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "campaign.json"
    if not path.is_file():
        raise FileNotFoundError(f"no campaign at {folder} (campaign.json missing)")
    return json.loads(path.read_text())


def _tracker(project: Project, name: str) -> CampaignTracker:
    import mlflow

    uri, experiment, location = mlflow_settings(project.path, project.env)
    mlflow.set_tracking_uri(uri)  # the report logs through the global client
    return CampaignTracker(uri, experiment, name, location)


class _SlurmPlaceholders:
    """Stands in for submitit's JobEnvironment when a multi-node command is printed before submission."""

    node, job_id, hostnames = "$SLURM_NODEID", "$SLURM_JOB_ID", ["<first host of $SLURM_JOB_NODELIST>"]


def run_commands(spec: RunSpec) -> list[str]:
    if spec.nodes == 1:
        return [" ".join(kedro_command(spec, "new"))]
    return [f"{spec.run_name}, every node: " + " ".join(torchrun_command(spec, _SlurmPlaceholders)),
            f"{spec.run_name}, then the first node: " + " ".join(kedro_command(spec, "finished"))]


def _print_plan(resources: Resources, job_name: str, folder: Path, n_jobs: int, commands: list[str]) -> str:
    from isles_diffseg.campaign.executors import submitit_parameters

    lines = [f"executor: {resources.executor} ({n_jobs} job{'s' if n_jobs != 1 else ''}, at most "
             f"{resources.parallel} at once)",
             f"submitit parameters: {json.dumps(submitit_parameters(resources, job_name))}"]
    if resources.executor == "slurm":
        lines += ["sbatch script (submitit):", sbatch_script(resources, job_name, folder, n_jobs)]
    if resources.nodes > 1:
        lines += [f"each job: {resources.nodes} nodes x {resources.gpus} GPUs = one DDP training of "
                  f"{resources.nodes * resources.gpus} processes (torchrun on every node, c10d rendezvous)"]
    lines += ["runs:", *commands]
    text = "\n".join(lines)
    print(text)
    return text


def grid_campaign(project: Project, name: str, params: str, folds: str, resources: Resources,
                  val_fold: str | None = None, with_unet: bool = False, dry_run: bool = False,
                  wait: bool = True) -> dict[str, Any]:
    check_name(name)
    axes = parse_grid(params)
    check_variant_names(axes, project.params["variants"])
    configurations = expand(axes)
    if with_unet:
        shared = {k: v[0] for k, v in axes.items() if len(v) == 1}
        configurations.append(unet_configuration(project, shared, len(configurations)))
    fold_list = check_folds(parse_folds(folds), project.n_folds)
    val = _val_fold(val_fold)
    keyed = [(c, UNET_KEY if with_unet and c is configurations[-1] else c.key) for c in configurations]
    runs = [{"run_name": run_name(name, key, k), "configuration": key, "fold": k, "params": c.params}
            for c, key in keyed for k in fold_list]
    folder = project.campaign_dir(name)
    job_name = f"campaign_{name}"
    specs = [RunSpec(str(project.path), r["run_name"], {**r["params"], "data.fold": r["fold"], "data.val_fold": val},
                     env=project.env, gpus=resources.gpus, nodes=resources.nodes) for r in runs]
    commands = [line for spec in specs for line in run_commands(spec)]
    if dry_run:
        plan = _print_plan(resources, job_name, folder / "submitit", len(specs), commands)
        return {"dry_run": True, "plan": plan, "runs": [r["run_name"] for r in runs]}
    manifest = {
        "name": name, "kind": "grid", "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "env": project.env, "folds": fold_list, "val_fold": val, "grid": params,
        "configurations": [{"key": key, "label": "UNet baseline" if key == UNET_KEY else c.label,
                            "params": c.params} for c, key in keyed],
        "runs": [{k: v for k, v in r.items() if k != "params"} for r in runs], "resources": asdict(resources),
    }
    _write_manifest(folder, manifest)
    tracker = _tracker(project, name)
    parent = tracker.parent("grid", {"grid": params, "folds": folds, "val_fold": val, "env": project.env,
                                     "n_configurations": len(configurations), **asdict(resources)})
    jobs = []
    for run, spec in zip(runs, specs, strict=True):
        child = tracker.child(parent, run["run_name"], {"isles_diffseg_campaign_configuration": run["configuration"],
                                                        "isles_diffseg_campaign_fold": str(run["fold"])})
        run["mlflow_run_id"] = child
        jobs.append(FoldRun(RunSpec(**{**asdict(spec), "mlflow_run_id": child,
                                       "extra_env": {"MLFLOW_TRACKING_URI": tracker.tracking_uri}})))
    manifest["runs"] = [{k: v for k, v in r.items() if k != "params"} for r in runs]
    manifest["mlflow"] = {"parent_run_id": parent, "tracking_uri": tracker.tracking_uri}
    _write_manifest(folder, manifest)
    return _submit_and_report(project, folder, manifest, resources, jobs, tracker, wait)


def _submit_and_report(project: Project, folder: Path, manifest: dict[str, Any], resources: Resources,
                       jobs: list[Any], tracker: CampaignTracker, wait: bool) -> dict[str, Any]:
    executor = make_executor(resources, folder / "submitit", f"campaign_{manifest['name']}")
    submitted = submit(executor, resources, jobs)
    manifest["jobs"] = [{"job_id": j.job_id} for j in submitted]
    _write_manifest(folder, manifest)
    logger.info("Campaign %s: %d job(s) submitted (%s)", manifest["name"], len(submitted),
                ", ".join(j.job_id for j in submitted))
    if resources.executor == "slurm" and not wait:
        print(f"submitted {len(submitted)} job(s) as {submitted[0].job_id.split('_')[0]}; when they finish: "
              f"python -m isles_diffseg.campaign report --name {manifest['name']}")
        return {"submitted": [j.job_id for j in submitted]}
    outcomes = [outcome(j) for j in submitted]
    manifest["jobs"] = outcomes
    _write_manifest(folder, manifest)
    result = report(project, manifest["name"])
    failed = [o for o in outcomes if o["state"] != "COMPLETED"]
    tracker.finish(manifest["mlflow"]["parent_run_id"], "FAILED" if failed else "FINISHED")
    for failure in failed:
        logger.error("Job %s failed: %s (log: %s)", failure["job_id"], failure["error"], failure["log"])
    return {**result, "jobs": outcomes}


def optuna_campaign(project: Project, space_path: str, n_trials: int, resources: Resources, name: str | None = None,
                    workers: int = 1, storage: str | None = None, fold: int = 0, val_fold: str | None = None,
                    dry_run: bool = False, wait: bool = True) -> dict[str, Any]:
    space = load_space(space_path)
    name = check_name(name or space.name)
    check_variant_names({**space.categorical_choices(), **{k: [v] for k, v in space.fixed.items()}},
                        project.params["variants"])
    if n_trials < 1 or workers < 1:
        raise ValueError("--trials and --workers must be >= 1")
    size = grid_size(space)
    if size is not None and n_trials > size:
        raise ValueError(f"--trials {n_trials}: the grid sampler of {space_path} has only {size} points")
    check_folds([fold], project.n_folds)
    val = _val_fold(val_fold)
    if val == "none":
        raise ValueError("an Optuna study optimises the validation Dice: it needs a validation fold (--val-fold)")
    folder = project.campaign_dir(name)
    storage = storage or f"sqlite:///{(folder / 'optuna.db').as_posix()}"
    if storage.startswith("sqlite") and resources.executor == "slurm" and workers > 1:
        logger.warning("%d workers on several nodes share a sqlite file (%s): sqlite's locking is unreliable on "
                       "network file systems; give --storage an RDB URL (postgresql://..., mysql://...)",
                       workers, storage)
    settings = StudySettings(name, storage, space, n_trials, fold, val, str(project.path), str(folder),
                             env=project.env, gpus=resources.gpus, nodes=resources.nodes)
    if dry_run:
        example = RunSpec(str(project.path), trial_run_name(name, 0, fold),
                          {**space.fixed, **{k: "<sampled>" for k in space.params}, "data.fold": fold,
                           "data.val_fold": val}, env=project.env, gpus=resources.gpus, nodes=resources.nodes)
        plan = _print_plan(resources, f"campaign_{name}", folder / "submitit", workers,
                           [f"{workers} worker(s) share study {name!r} in {storage}, {n_trials} trials; each trial:",
                            *run_commands(example)])
        return {"dry_run": True, "plan": plan}
    manifest = {"name": name, "kind": "optuna", "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "env": project.env, "folds": [fold], "val_fold": val, "space": asdict(space), "storage": storage,
                "n_trials": n_trials, "configurations": None, "resources": asdict(resources)}
    folder.mkdir(parents=True, exist_ok=True)
    _write_manifest(folder, manifest)
    tracker = _tracker(project, name)
    parent = tracker.parent("optuna", {"space": space_path, "trials": n_trials, "workers": workers, "fold": fold,
                                       "val_fold": val, "storage": storage, **{f"fixed.{k}": v for k, v in
                                                                                space.fixed.items()}})
    manifest["mlflow"] = {"parent_run_id": parent, "tracking_uri": tracker.tracking_uri}
    _write_manifest(folder, manifest)
    settings = StudySettings(**{**asdict(settings), "space": space, "tracking_uri": tracker.tracking_uri,
                                "experiment": mlflow_settings(project.path, project.env)[1],
                                "parent_run_id": parent})
    load_study(settings, create=True)  # created once here, so the workers only load it
    jobs = [StudyWorker(settings, worker) for worker in range(workers)]
    return _submit_and_report(project, folder, manifest, resources, jobs, tracker, wait)


def report(project: Project, name: str) -> dict[str, Any]:
    """(Re)build ``campaign_<name>/`` from what the campaign's runs have left so far."""
    folder = project.campaign_dir(name)
    manifest = _read_manifest(folder)
    if manifest["kind"] == "grid":
        return build_report(manifest, manifest["configurations"], manifest["runs"], project.reporting_dir)
    import optuna

    from isles_diffseg.campaign.space import SearchSpace

    space = SearchSpace(**manifest["space"])
    settings = StudySettings(name, manifest["storage"], space, manifest["n_trials"], manifest["folds"][0],
                             manifest["val_fold"], str(project.path), str(folder))
    study = load_study(settings)
    configurations, runs, run_of_trial = [], [], {}
    varying = list(space.params)
    for trial in study.get_trials(deepcopy=False):
        run = trial.user_attrs.get("run_name")
        if run is None:
            continue
        run_of_trial[trial.number] = run
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        key = f"t{trial.number:03d}"
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={trial.params[k]}" for k in varying if k in trial.params)
        configurations.append({"key": key, "label": label, "params": trial.params})
        runs.append({"run_name": run, "configuration": key, "fold": manifest["folds"][0]})
    return build_report(manifest, configurations, runs, project.reporting_dir, study=study,
                        run_of_trial=run_of_trial)


__all__ = ["Project", "grid_campaign", "optuna_campaign", "report"]
