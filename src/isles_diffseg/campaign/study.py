"""Optuna studies: workers (submitit jobs) that share one study in a storage and train one trial at a time.

Each worker asks the study for a trial (Optuna's ask/tell interface), turns the sampled parameters into
``--params`` and runs the trial as a campaign run (:class:`~isles_diffseg.campaign.runs.FoldRun`: ``kedro run
--pipelines training,evaluation`` on ``--fold``). Training reports ``val_dice_3d`` at every validation step to
the trial and stops when the pruner prunes it (:mod:`isles_diffseg.campaign.pruning`); the objective told to
the study is the run's best validation Dice (validation fold, never the test fold). Workers stop when the
study holds ``n_trials`` trials. A worker requeued by SLURM continues its unfinished trial from the run's
checkpoint instead of asking for a new one.
"""

from __future__ import annotations

import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from isles_diffseg.campaign.pruning import METRIC, TRIAL_ENV, trial_description
from isles_diffseg.campaign.runs import RECORD, FoldRun, RunSpec
from isles_diffseg.campaign.space import SearchSpace, build_pruner, build_sampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySettings:
    campaign: str
    storage: str
    space: SearchSpace
    n_trials: int
    fold: int
    val_fold: Any
    project_dir: str
    campaign_dir: str  # data/08_reporting/campaign_<name>: pruning markers
    env: str | None = None
    gpus: int = 1
    nodes: int = 1
    tracking_uri: str | None = None
    experiment: str | None = None
    parent_run_id: str | None = None


def trial_run_name(campaign: str, number: int, fold: int) -> str:
    return f"{campaign}_t{number:03d}_fold{fold}"


def load_study(settings: StudySettings, create: bool = False) -> Any:
    import optuna

    kwargs = {"study_name": settings.campaign, "storage": settings.storage,
              "sampler": build_sampler(settings.space), "pruner": build_pruner(settings.space.pruner)}
    if create:
        return optuna.create_study(direction="maximize", load_if_exists=True, **kwargs)
    return optuna.load_study(**kwargs)


class StudyWorker(submitit.helpers.Checkpointable):
    def __init__(self, settings: StudySettings, worker: int = 0):
        self.settings, self.worker = settings, worker
        self.current_trial_id: int | None = None  # kept across a requeue: that trial is continued
        self._run: FoldRun | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_run"] = None
        return state

    def __call__(self) -> dict[str, Any]:
        previous = signal.getsignal(signal.SIGUSR2)

        def interrupt_then_previous(signum: int, frame: Any) -> None:
            if self._run is not None:
                self._run.interrupt()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGUSR2, interrupt_then_previous)
        try:
            return self.work(submitit.JobEnvironment())
        finally:
            signal.signal(signal.SIGUSR2, previous)
            if self._run is not None:
                self._run.interrupt(wait=True)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        if self._run is not None:
            self._run.interrupt(wait=True)
        return submitit.helpers.DelayedSubmission(self)

    def work(self, job_env: Any = None) -> dict[str, Any]:
        import optuna

        study = load_study(self.settings)
        outcomes = []
        while True:
            if self.current_trial_id is not None:
                trial = optuna.trial.Trial(study, self.current_trial_id)
                logger.info("Worker %d continues trial %d", self.worker, trial.number)
            elif len(study.get_trials(deepcopy=False)) >= self.settings.n_trials:
                break
            else:
                trial = study.ask()
                self.current_trial_id = trial._trial_id
            outcomes.append(self.run_trial(study, trial, job_env))
            self.current_trial_id = None
        return {"worker": self.worker, "trials": outcomes}

    def run_trial(self, study: Any, trial: Any, job_env: Any) -> dict[str, Any]:
        import optuna

        s = self.settings
        params = s.space.suggest(trial)
        run_name = trial_run_name(s.campaign, trial.number, s.fold)
        trial.set_user_attr("run_name", run_name)
        marker = Path(s.campaign_dir) / "pruned" / f"{run_name}.json"
        mlflow_run = None
        extra_env = {TRIAL_ENV: trial_description(s.storage, s.campaign, trial._trial_id, s.space.pruner, marker)}
        if s.parent_run_id:
            from isles_diffseg.campaign.tracking import CampaignTracker

            tracker = CampaignTracker(s.tracking_uri, s.experiment, s.campaign)
            mlflow_run = tracker.child(s.parent_run_id, run_name, {"isles_diffseg_optuna_trial": str(trial.number)})
            extra_env["MLFLOW_TRACKING_URI"] = s.tracking_uri
        spec = RunSpec(s.project_dir, run_name, {**params, "data.fold": s.fold, "data.val_fold": s.val_fold},
                       env=s.env, gpus=s.gpus, nodes=s.nodes, mlflow_run_id=mlflow_run, extra_env=extra_env)
        self._run = FoldRun(spec)
        logger.info("Trial %d (%s): %s", trial.number, run_name, params)
        try:
            result = self._run.execute(job_env)
        except RuntimeError as exc:
            state = optuna.trial.TrialState.PRUNED if marker.is_file() else optuna.trial.TrialState.FAIL
            _tell(study, trial, state=state)
            if mlflow_run:
                tracker.client.set_tag(mlflow_run, "isles_diffseg_optuna_state", state.name)
                tracker.client.update_run(mlflow_run, name=run_name)
                tracker.finish(mlflow_run, "KILLED" if state == optuna.trial.TrialState.PRUNED else "FAILED")
            if state == optuna.trial.TrialState.FAIL:
                logger.error("Trial %d failed: %s", trial.number, exc)
            return {"trial": trial.number, "run_name": run_name, "state": state.name}
        finally:
            self._run = None
        record = json.loads((Path(result["run_dir"]) / RECORD).read_text())
        value = record.get("best_metric")
        if value is None:
            raise RuntimeError(f"run {run_name} has no best {METRIC}: an Optuna study needs a validation fold")
        _tell(study, trial, float(value))
        if mlflow_run:
            tracker.client.set_tag(mlflow_run, "isles_diffseg_optuna_state", "COMPLETE")
        return {"trial": trial.number, "run_name": run_name, "state": "COMPLETE", "value": float(value)}


def _tell(study: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
    """``study.tell``, for the grid sampler too: after its last point it calls ``Study.stop()``, which Optuna only
    allows inside ``optimize()`` and refuses with a RuntimeError under ask/tell. The trial's state is stored
    all the same (Optuna writes it in a ``finally``), and workers stop by counting trials, so that refusal is
    dropped here and every other error raised."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
