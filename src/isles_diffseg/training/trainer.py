"""Step-based training of one model on the slice store: AMP, EMA, validation, exact resume, DDP.

The trainer is plain library code. The Kedro ``training`` node and the ``torchrun`` entry point
(:mod:`isles_diffseg.train`) both build a :class:`Trainer` and call :meth:`Trainer.fit`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.diffusion import mask_to_signal
from isles_diffseg.inference.compiled_denoiser import SamplingFastPath
from isles_diffseg.inference.predict import AMP_DTYPES, SamplerConfig, build_diffusion
from isles_diffseg.models import build_model
from isles_diffseg.models.kinds import segmentation_logits
from isles_diffseg.runtime import (
    check_compile_mode,
    compile_module,
    fast_path_enabled,
    resolve_device,
    uses_cuda_graphs,
)
from isles_diffseg.training.augmentation import build_augmentation
from isles_diffseg.training.batches import ResidentSlices, SliceBatchSampler, load_batch
from isles_diffseg.training.checkpoints import CheckpointFolder, load_checkpoint, save_atomic
from isles_diffseg.training.distributed import DistContext, barrier, gather_objects
from isles_diffseg.training.ema import ExponentialMovingAverage
from isles_diffseg.training.losses import build_loss, timestep_bucket_metrics
from isles_diffseg.training.optim import build_optimizer, build_scheduler
from isles_diffseg.training.run_config import RunConfig
from isles_diffseg.training.validation import ValidationResult, summarise_validation, validate

logger = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class StopRequest:
    """SIGINT (Ctrl-C, or the scheduler's preemption notice that a campaign job passes on) stops training at the
    next step boundary, where the loop saves ``latest.pt``; a second SIGINT interrupts at once.

    Raised as KeyboardInterrupt wherever Python happens to be, the first SIGINT could be swallowed: pickling
    runs the standard library's ``copyreg._slotnames``, which ends in a bare ``except: pass``, so a SIGINT that
    arrived while ``torch.save`` wrote a checkpoint was lost and training ran on to its end (seen in the
    campaign requeue test about every other time). Installed on the main thread of a single-process run only:
    DDP ranks would have to agree on the step, and keep the immediate KeyboardInterrupt.
    """

    def __init__(self) -> None:
        self.pending = False
        self._previous: Any = None

    @classmethod
    def install(cls, world_size: int) -> StopRequest | None:
        if world_size != 1 or threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None  # SIGINT ignored or handled by the caller: theirs to keep
        request = cls()
        request._previous = signal.signal(signal.SIGINT, request._handle)
        return request

    def _handle(self, *_: Any) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True
        logger.warning("SIGINT: stopping after this step (again to stop at once)")

    def uninstall(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


class MetricSink(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_validation(self, result: ValidationResult, step: int, modalities: list[str]) -> None: ...
    def log_checkpoint(self, path: Path) -> None: ...


class NullSink:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_validation(self, result: ValidationResult, step: int, modalities: list[str]) -> None:
        pass

    def log_checkpoint(self, path: Path) -> None:
        pass


@dataclass
class TrainingResult:
    run_name: str
    run_dir: str
    steps: int
    best_metric: float | None
    best_step: int | None
    best_checkpoint: str | None
    skipped_steps: int
    interrupted: bool
    history: list[dict[str, float]] = field(default_factory=list)
    selection_metric: str = "val_dice_3d"  # what best_metric is the best of

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


class Trainer:
    """Trains ``config`` on ``train_rows`` of ``store``; validates on ``val_cases``; writes ``run_dir``."""

    def __init__(
        self,
        config: RunConfig,
        store: SliceStore,
        train_rows: np.ndarray,
        val_cases: list[str],
        run_dir: Path,
        *,
        sink: MetricSink | None = None,
        dist_ctx: DistContext | None = None,
        resume_from: Path | None = None,
        show_progress: bool = True,
    ):
        self.config, self.store, self.val_cases = config, store, val_cases
        self.run_dir = Path(run_dir)
        self.sink = sink or NullSink()
        self.dist = dist_ctx or DistContext()
        self.show_progress = show_progress and self.dist.is_main
        recipe = config.recipe
        self.max_steps = int(recipe["max_steps"])
        self.device = resolve_device(config.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed slice shapes: the fastest conv kernels, picked once
        self.amp_dtype = AMP_DTYPES[recipe.get("amp", "none")]
        if self.amp_dtype is not None and self.device.type == "cpu" and self.amp_dtype == torch.float16:
            raise ValueError("fp16 autocast needs a GPU; use amp: bf16 or none on CPU")

        self.fast_path = fast_path_enabled(recipe.get("fast_path", "auto"), self.device)
        backend = recipe.get("compile_backend", "inductor")
        compile_mode = check_compile_mode(str(recipe.get("compile_mode", "default")), "training.compile_mode")
        # NHWC weights and inputs: cuDNN's bf16 convolutions run in NHWC, and with NCHW tensors every one of them
        # transposes its input and output (gpu_profile.py on an H200: ~600 transposes per step of the 16c model)
        self.channels_last = self.fast_path and bool(recipe.get("channels_last", False))
        # CUDA graphs of the compiled forward and backward: one replay instead of hundreds of kernel launches
        self.cuda_graphs = self.fast_path and uses_cuda_graphs(compile_mode, backend)

        torch.manual_seed(config.seed)  # identical initial weights (and EMA) on every rank
        self.model = build_model(config.model).to(self.device)
        if self.channels_last:  # before the EMA copies it, so that both update with the same strides
            self.model.to(memory_format=torch.channels_last)
        self.ema = ExponentialMovingAverage(self.model, float(recipe["ema_rate"]), bool(recipe.get("ema_warmup", True)))
        # listed once for the gradient clipping: walking the module tree for them costs ~2 ms of host time per
        # step (tiny CPU model, cProfile), and moves (.to, load_state_dict) keep each Parameter object
        self.parameters = list(self.model.parameters())
        seed = config.seed + 1000 * self.dist.rank  # per-rank streams: no correlated noise across ranks
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.optimizer = build_optimizer(config.optimizer, self.model, fused=self.fast_path and self.device.type == "cuda")
        self.scheduler = build_scheduler(config.scheduler, self.optimizer, self.max_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.loss_fn = build_loss(config.loss)
        self.augment = build_augmentation(config.augmentation)
        self.diffusion = build_diffusion(config.diffusion) if config.kind == "diffusion" else None
        self.sampler_config = (SamplerConfig.from_variant(config.extra.get("val_sampling") or config.diffusion)
                               if config.kind == "diffusion" else None)  # validation's; training samples no chain
        self.batches = SliceBatchSampler(train_rows, int(recipe["batch_size"]), seed=config.seed,
                                         rank=self.dist.rank, world_size=self.dist.world_size)
        self.noise_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.augment_generator = torch.Generator(self.device).manual_seed(seed + 2)
        self.train_model: nn.Module = (
            DistributedDataParallel(self.model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)
            if self.dist.enabled else self.model
        )
        self.resident: ResidentSlices | None = None
        if self.fast_path:
            # self.model stays the uncompiled module: checkpoints, EMA and validation see plain parameter names
            self.train_model = compile_module(self.train_model, compile_mode, backend)
            self.resident = self._resident_slices(train_rows)
        # validation samples through the evaluation pipeline's compiled sampler (one graph for the validation
        # batch, kept on the evaluated module across validations): eager DDIM sampling of the validation cases
        # is what makes validation cost minutes on a GPU. Default mode: a second CUDA graph pool for a few
        # validations would not pay for its memory.
        self.validation_fast_path = (
            SamplingFastPath(enabled=True, compile_backend=backend, channels_last=self.channels_last)
            if self.fast_path else None)
        self.checkpoints = CheckpointFolder(self.run_dir / "checkpoints", int(recipe.get("keep_last_checkpoints", 3)))
        self.step = 0
        # training.val_thresholds: validation also sweeps the threshold, and checkpoints are selected on the
        # swept 3D Dice (what the evaluation's threshold sweep will score), not on the Dice at 0.5
        self.val_thresholds = recipe.get("val_thresholds") or None
        self.selection_metric = "val_dice_3d_swept" if self.val_thresholds else "val_dice_3d"
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.skipped_steps = 0
        self.nonfinite_streak = 0
        self.history: list[dict[str, float]] = []
        if resume_from is not None:
            self._restore(load_checkpoint(resume_from, self.device))

    def _resident_slices(self, train_rows: np.ndarray) -> ResidentSlices | None:
        """The training slices on the device when they take under a quarter of its free memory."""
        needed = ResidentSlices.nbytes(self.store, len(np.unique(train_rows)))
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
            if needed > free / 4:
                logger.info("Training slices (%.1f GiB) stay memory-mapped: over a quarter of the %.1f GiB free on %s",
                            needed / 2**30, free / 2**30, self.device)
                return None
        started = time.perf_counter()
        resident = ResidentSlices(self.store, train_rows, self.device)
        logger.info("Training slices resident on %s: %d slices, %.2f GiB in %.1f s", self.device, len(resident.rows),
                    needed / 2**30, time.perf_counter() - started)
        return resident

    # ---- state ------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        generators = gather_objects(
            {"noise": self.noise_generator.get_state(), "augment": self.augment_generator.get_state()}, self.dist
        )
        return {
            "format": 1,
            "run_name": self.config.run_name,
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.batches.state_dict(),
            "generators": generators,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            "best_metric": self.best_metric,
            "selection_metric": self.selection_metric,
            "best_step": self.best_step,
            "skipped_steps": self.skipped_steps,
            "nonfinite_streak": self.nonfinite_streak,
            "history": self.history,
            "modalities": self.store.modalities,
            "context_slices": self.store.context_slices,
            "image_size": self.store.image_size,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["sampler"])
        generators = state["generators"]
        if len(generators) != self.dist.world_size:
            raise ValueError(f"checkpoint was written by {len(generators)} ranks, this run has {self.dist.world_size}")
        mine = generators[self.dist.rank]
        self.noise_generator.set_state(mine["noise"].cpu())
        self.augment_generator.set_state(mine["augment"].cpu())
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.step = int(state["step"])
        selected_on = state.get("selection_metric", "val_dice_3d")  # checkpoints before val_thresholds existed
        if selected_on != self.selection_metric:
            raise ValueError(f"the checkpoint's best weights were selected on {selected_on}, this run selects on "
                             f"{self.selection_metric}: resume with the training.val_thresholds the run started with")
        self.best_metric, self.best_step = state["best_metric"], state["best_step"]
        self.skipped_steps, self.nonfinite_streak = state["skipped_steps"], state["nonfinite_streak"]
        self.history = list(state["history"])
        logger.info("Resumed %s at step %d (best %s at step %s)", self.config.run_name, self.step,
                    self.best_metric, self.best_step)

    def save_latest(self) -> None:
        state = self._state()  # collective in DDP: every rank takes part
        if self.dist.is_main:
            save_atomic(state, self.checkpoints.latest)

    # ---- one optimisation step -------------------------------------------------------------------
    def _loss(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.cuda_graphs:  # a new step: the last replay's outputs (already consumed) may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            if self.config.kind == "diffusion":
                t = self.loss_fn.sample_timesteps(len(mask), self.diffusion.num_timesteps, self.device,
                                                  self.noise_generator)
                terms = self.diffusion.training_terms(self.train_model, mask_to_signal(mask), image, t=t,
                                                      generator=self.noise_generator)
                return self.loss_fn(terms, mask, self.diffusion, self.step)
            return self.loss_fn(segmentation_logits(self.train_model, image), mask)

    def train_step(self) -> dict[str, torch.Tensor | float] | None:
        """One optimizer step (over ``grad_accumulation`` micro-batches); None if it was skipped.

        The gradient norm is the step's only host sync: a non-finite loss makes non-finite gradients,
        and under DDP the all-reduce spreads them to every rank, so all ranks skip together. Loss
        components stay on the device until the next log line.
        """
        recipe = self.config.recipe
        accumulation = int(recipe.get("grad_accumulation", 1))
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor | float] = {}
        for _ in range(accumulation):
            rows = self.batches.next_batch()
            image, mask = self.resident.batch(rows) if self.resident else load_batch(self.store, rows, self.device)
            image, mask = self.augment(image, mask, self.augment_generator)
            losses = self._loss(image, mask)
            self.scaler.scale(losses["loss"] / accumulation).backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / accumulation
        self.scaler.unscale_(self.optimizer)
        clip = recipe.get("grad_clip") or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, clip))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()  # fp16: lowers the scale after an overflow
            self.skipped_steps += 1
            self.nonfinite_streak += 1
            limit = int(recipe.get("max_consecutive_nonfinite", 20))
            logger.warning("Step %d skipped: non-finite loss or gradient (%d in a row)", self.step, self.nonfinite_streak)
            if self.nonfinite_streak >= limit:
                raise NonFiniteTrainingError(
                    f"{self.nonfinite_streak} consecutive non-finite steps at step {self.step}; stopping. The last "
                    f"good checkpoint is {self.checkpoints.latest}. Lower the learning rate or try amp: none."
                )
            self.step += 1
            return None
        self.nonfinite_streak = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update(self.model)
        self.step += 1
        sums["grad_norm"] = grad_norm
        sums["lr"] = self.optimizer.param_groups[0]["lr"]
        return sums

    # ---- validation and checkpoints -----------------------------------------------------------------
    def validate(self, n_examples: int = 0) -> ValidationResult | None:
        """Sharded over ranks (each scores its share of the cases); the main rank gets the result."""
        recipe = self.config.recipe
        model = self.ema.model if recipe.get("evaluate_with_ema", True) else self.model
        mine = self.val_cases[self.dist.rank :: self.dist.world_size]
        if self.dist.is_main:  # a CPU validation can take minutes: say what is running before it starts
            sampling = (f"{self.sampler_config.sampler} {self.sampler_config.respacing}, "
                        f"{recipe.get('val_members', 1)} member(s)" if self.sampler_config else "one forward pass")
            logger.info("Step %d: validating on %d cases (%s per slice; val_max_cases, val_members and the "
                        "respacing of val_diffusion or the run's diffusion variant set the cost)", self.step,
                        len(self.val_cases), sampling)
        result = validate(
            model, self.store, mine, kind=self.config.kind, diffusion=self.diffusion,
            sampler=self.sampler_config, device=self.device, batch_size=int(recipe.get("val_batch_size", 64)),
            members=int(recipe.get("val_members", 1)), amp_dtype=self.amp_dtype,
            seed=self.config.seed + self.step, n_examples=n_examples if self.dist.is_main else 0,
            thresholds=self.val_thresholds, fast_path=self.validation_fast_path,
        )
        gathered = gather_objects(result.per_case, self.dist)
        if not self.dist.is_main:
            return None
        per_case = pd.concat(gathered, ignore_index=True)
        full = summarise_validation(per_case, self.val_thresholds)
        return ValidationResult(per_case, full, result.examples)

    def _after_validation(self, result: ValidationResult) -> None:
        metric = result.metrics[self.selection_metric]
        improved = self.best_metric is None or metric > self.best_metric
        if improved:
            self.best_metric, self.best_step = metric, self.step
        best = {f"best_{self.selection_metric}": self.best_metric}
        self.history.append({"step": self.step, **result.metrics, **best})
        self.sink.log_metrics({**result.metrics, **best}, self.step)
        self.sink.log_validation(result, self.step, self.store.modalities)
        result.per_case.to_csv(self.run_dir / "validation_latest.csv", index=False)
        logger.info("Step %d validation: %s (best %.4f at step %d)", self.step,
                    ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()), self.best_metric, self.best_step)
        if improved:
            save_atomic(self._model_only_state(), self.checkpoints.best)
            self.sink.log_checkpoint(self.checkpoints.best)

    def _model_only_state(self) -> dict[str, Any]:
        """What evaluation needs: the weights it should use (EMA by default) and how to rebuild the model."""
        use_ema = self.config.recipe.get("evaluate_with_ema", True)
        return {
            "format": 1,
            "run_name": self.config.run_name,
            "config": self.config.to_dict(),
            "step": self.step,
            "weights": "ema" if use_ema else "raw",
            "model": (self.ema.model if use_ema else self.model).state_dict(),
            "metric": {self.selection_metric: self.best_metric},
            "modalities": self.store.modalities,
            "context_slices": self.store.context_slices,
            "image_size": self.store.image_size,
        }

    # ---- the loop ------------------------------------------------------------------------------------
    def fit(self) -> TrainingResult:
        recipe = self.config.recipe
        log_every = int(recipe.get("log_interval", 50))
        val_every = int(recipe.get("val_interval", 1000))
        ckpt_every = int(recipe.get("checkpoint_interval", 1000))
        n_grids = int(recipe.get("image_grids", 0))
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1, default=str))
        progress = None
        if self.show_progress:
            from tqdm.auto import tqdm

            # disable=None: a live bar on a terminal, none in logs and CI (the log lines below remain)
            progress = tqdm(total=self.max_steps, initial=self.step, desc=self.config.run_name[:40], unit="step",
                            disable=None)
        window: dict[str, torch.Tensor | float] = {}
        window_steps, window_start = 0, time.perf_counter()
        images_per_step = int(recipe["batch_size"]) * int(recipe.get("grad_accumulation", 1)) * self.dist.world_size
        interrupted = False
        stop = StopRequest.install(self.dist.world_size)
        try:
            while self.step < self.max_steps:
                if stop is not None and stop.pending:
                    raise KeyboardInterrupt  # handled below like any Ctrl-C, between two steps
                metrics = self.train_step()
                if metrics is not None:
                    for key, value in metrics.items():
                        window[key] = window.get(key, 0.0) + value
                    window_steps += 1
                if progress is not None:
                    progress.update(1)
                if window_steps and (self.step % log_every == 0 or self.step == self.max_steps):
                    elapsed = time.perf_counter() - window_start
                    logged = timestep_bucket_metrics(window.pop("mse_by_t_sum", None), window.pop("mse_by_t_count", None),
                                                     self.diffusion)
                    logged.update({f"train_{k}": float(v) / window_steps for k, v in window.items()})
                    logged["train_images_per_s"] = window_steps * images_per_step / max(elapsed, 1e-9)
                    logged["train_skipped_steps"] = float(self.skipped_steps)
                    if self.dist.is_main:
                        self.sink.log_metrics(logged, self.step)
                    if self.dist.is_main:
                        logger.info("Step %d/%d: loss %.4f, lr %.2e, %.0f images/s", self.step, self.max_steps,
                                    logged["train_loss"], logged["train_lr"], logged["train_images_per_s"])
                    if progress is not None:
                        progress.set_postfix(loss=f"{logged['train_loss']:.4f}", lr=f"{logged['train_lr']:.2e}",
                                             img_s=f"{logged['train_images_per_s']:.0f}")
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if self.val_cases and (self.step % val_every == 0 or self.step == self.max_steps):
                    result = self.validate(n_grids)
                    if result is not None:
                        self._after_validation(result)
                    barrier(self.dist)
                if self.step % ckpt_every == 0 or self.step == self.max_steps:
                    state = self._state()
                    if self.dist.is_main:
                        save_atomic(state, self.checkpoints.latest)
                        self.checkpoints.save_interval(state, self.step)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("Interrupted at step %d: saving %s", self.step, self.checkpoints.latest)
            self.save_latest()
        finally:
            if stop is not None:
                stop.uninstall()
            if progress is not None:
                progress.close()
        if self.dist.is_main and not self.val_cases and not interrupted:
            save_atomic(self._model_only_state(), self.checkpoints.best)  # no validation: the last weights
            self.sink.log_checkpoint(self.checkpoints.best)
        if self.dist.is_main:
            pd.DataFrame(self.history).to_csv(self.run_dir / "history.csv", index=False)
        best = self.checkpoints.best
        if stop is not None and stop.pending and not interrupted:
            signal.raise_signal(signal.SIGINT)  # came during the last step: training is complete, then it acts
        return TrainingResult(
            run_name=self.config.run_name, run_dir=str(self.run_dir), steps=self.step,
            best_metric=self.best_metric, best_step=self.best_step,
            best_checkpoint=str(best) if best.exists() else None, skipped_steps=self.skipped_steps,
            interrupted=interrupted, history=self.history, selection_metric=self.selection_metric,
        )

