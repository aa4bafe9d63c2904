"""Optuna pruning inside a training run: a metric sink that reports the run's selection metric to the trial.

That is ``val_dice_3d``, or ``val_dice_3d_swept`` when the run sweeps its validation threshold
(``training.val_thresholds``): the trial is pruned, and ranked, on what its checkpoints are selected on.

A trial's training runs in its own ``kedro run`` (a child process of the study worker, possibly on another
node), so the trial cannot be handed over as a Python object. The worker describes it in the environment
variable :data:`TRIAL_ENV` (storage URL, study name, trial id, pruner); :func:`with_trial_pruning`, called
where the trainer's sink is built, wraps the sink so every validation is reported to the study's storage and
the run stops with :class:`optuna.TrialPruned` when the pruner says so. The worker learns that the trial was
pruned (and not crashed) from the marker file the sink writes before raising.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRIAL_ENV = "ISLES_DIFFSEG_OPTUNA_TRIAL"
METRIC = "val_dice_3d"  # what training validates on the validation fold; the study maximises it
SWEPT_METRIC = "val_dice_3d_swept"  # instead, when the run sweeps its validation threshold


class OptunaPruningSink:
    """Passes everything on to ``inner``; reports each validation Dice and stops a trial the pruner prunes."""

    def __init__(self, inner: Any, trial: Any, marker: Path):
        self.inner, self.trial, self.marker = inner, trial, Path(marker)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        name = SWEPT_METRIC if SWEPT_METRIC in metrics else METRIC
        if name not in metrics:
            return
        import optuna

        value = float(metrics[name])
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(json.dumps({"step": step, name: value}))
            logger.warning("Optuna trial %d pruned at step %d (%s=%.4f)", self.trial.number, step, name, value)
            raise optuna.TrialPruned(f"pruned at step {step} with {name}={value:.4f}")

    def log_validation(self, result: Any, step: int, modalities: list[str]) -> None:
        self.inner.log_validation(result, step, modalities)

    def log_checkpoint(self, path: Path) -> None:
        self.inner.log_checkpoint(path)


def trial_description(storage: str, study: str, trial_id: int, pruner: dict[str, Any], marker: Path) -> str:
    """The value of :data:`TRIAL_ENV` for one trial."""
    return json.dumps({"storage": storage, "study": study, "trial_id": int(trial_id), "pruner": pruner,
                       "marker": str(marker)})


def with_trial_pruning(sink: Any) -> Any:
    """``sink`` wrapped in :class:`OptunaPruningSink` when this process trains an Optuna trial, else ``sink``."""
    description = os.environ.get(TRIAL_ENV)
    if not description:
        return sink
    import optuna

    from isles_diffseg.campaign.space import build_pruner

    spec = json.loads(description)
    # The pruner is not kept in the storage: the study is loaded with the one the worker uses.
    study = optuna.load_study(study_name=spec["study"], storage=spec["storage"], pruner=build_pruner(spec["pruner"]))
    trial = optuna.trial.Trial(study, int(spec["trial_id"]))
    return OptunaPruningSink(sink, trial, Path(spec["marker"]))
