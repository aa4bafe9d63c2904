"""Load what a training run left behind: the selected weights and how to rebuild the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isles_diffseg.models import build_model
from isles_diffseg.training.checkpoints import load_checkpoint
from isles_diffseg.training.run_config import RunConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    run_name: str
    model: nn.Module
    config: RunConfig
    checkpoint: Path
    step: int
    modalities: list[str]
    context_slices: int
    image_size: int

    @property
    def kind(self) -> str:
        return self.config.kind


def load_trained_model(run_dir: Path, device: torch.device) -> TrainedModel:
    path = Path(run_dir) / "checkpoints" / "best.pt"
    state = load_checkpoint(path, map_location="cpu")
    config = RunConfig.from_dict(state["config"])
    model = build_model(config.model)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return TrainedModel(state["run_name"], model, config, path, int(state["step"]), list(state["modalities"]),
                        int(state["context_slices"]), int(state["image_size"]))


def check_compatible(trained: TrainedModel, store_modalities: list[str], context_slices: int, image_size: int) -> None:
    """A model only makes sense on slices prepared exactly as for its training."""
    theirs = (trained.modalities, trained.context_slices, trained.image_size)
    ours = (store_modalities, context_slices, image_size)
    if theirs != ours:
        raise ValueError(
            f"run {trained.run_name} was trained on (modalities, context, image size) {theirs}, but the slice "
            f"store holds {ours}; re-run data_processing with the run's settings"
        )


def check_split(trained: TrainedModel, split: dict[str, Any]) -> None:
    """Evaluation's roles must be the run's: another test fold would score cases the model trained on."""
    recorded = trained.config.extra.get("split")
    if recorded is None:
        logger.warning("run %s records no folds (trained before folds were chosen at run time); evaluating with "
                       "data.fold=%s, data.val_fold=%s as given", trained.run_name, split["test_fold"], split["val_fold"])
        return
    keys = ("n_folds", "test_fold", "val_fold")
    theirs, ours = (tuple(recorded[k] for k in keys), tuple(split[k] for k in keys))
    if theirs != ours:
        raise ValueError(
            f"run {trained.run_name} was trained with (data.n_folds, data.fold, data.val_fold) = {theirs}, but this "
            f"evaluation asks for {ours}: its test cases would include cases it trained on. Pass "
            f"--params data.fold={theirs[1]},data.val_fold={'none' if theirs[2] is None else theirs[2]}"
        )
