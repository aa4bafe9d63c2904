"""Evaluation nodes: threshold on the validation split, native-grid predictions, metrics, report.

What is evaluated is the ``training_run`` input: a :class:`TrainedRun` (our models: predicted here), or
:class:`ExternalPredictions` when ``evaluation.predictions`` names a folder of predictions made elsewhere
(nnU-Net, a submission). Both give the same native-grid ``<case>_{pred,prob,uncertainty}`` images, so
scoring, the threshold rules, the report, ``comparison`` and the cross-validation report treat them alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from isles_diffseg.data.case_store import CaseStore
from isles_diffseg.data.folds import roles_for_run, split_record
from isles_diffseg.data.orientation import NativeGeometry
from isles_diffseg.data.slice_store import SliceStore
from isles_diffseg.datasets.run_scoped_dataset import RunArtifact
from isles_diffseg.datasets.training_run_dataset import TrainedRun
from isles_diffseg.evaluation.case_scoring import ScoringTask
from isles_diffseg.evaluation.case_scoring import score_cases as score_case_tasks
from isles_diffseg.evaluation.external import (
    MASK,
    PROBABILITY,
    ExternalPredictions,
    check_predictions,
    read_prediction,
)
from isles_diffseg.evaluation.native_grid import NativePrediction, read_native_mask, to_native
from isles_diffseg.evaluation.report import (
    dice_distribution_figure,
    markdown_report,
    metric_table,
    overlay_figure,
    summarise_methods,
    to_markdown,
    volume_figure,
)
from isles_diffseg.evaluation.settings import (
    EvaluationSetup,
    min_component_ml,
    resolve_setup,
    scoring_workers,
    threshold_mode,
)
from isles_diffseg.evaluation.trained_model import TrainedModel, check_compatible, check_split
from isles_diffseg.inference.background import in_background
from isles_diffseg.inference.case_prediction import CasePrediction
from isles_diffseg.inference.case_prediction import predict_cases as predict_cases_batched
from isles_diffseg.metrics.threshold_selection import best_threshold, grid_edge_note, sweep_thresholds
from isles_diffseg.runtime import resolve_device
from isles_diffseg.tracking import ModelRunLogger, model_run_id

logger = logging.getLogger(__name__)


def _load(training_run: TrainedRun, store: SliceStore, evaluation: dict[str, Any],
          variants: dict[str, Any]) -> tuple[TrainedModel, EvaluationSetup]:
    """The run's model on the evaluation device (built once per `kedro run`: the dataset keeps it)."""
    device = resolve_device(str(evaluation.get("device", "auto")))
    trained = training_run.model(device)
    check_compatible(trained, store.modalities, store.context_slices, store.image_size)
    return trained, resolve_setup(evaluation, trained, variants, device)


def _predict(trained: TrainedModel, setup: EvaluationSetup, store: SliceStore,
             case_ids: list[str]) -> Iterator[CasePrediction]:
    """The cases' predictions in order, batched across cases, made in a worker thread ``prefetch_cases``
    cases ahead (the fast path compiled on first use: :mod:`isles_diffseg.inference.compiled_denoiser`);
    in this thread with CUDA graphs, which torch does not reliably support in other threads."""
    model = setup.fast_path.wrap(trained.model, setup.batch_size)
    return in_background(lambda: predict_cases_batched(
        model, store, case_ids, kind=trained.kind, diffusion=setup.diffusion, sampler=setup.sampler,
        device=setup.device, members=setup.members, fusion=setup.fusion, uncertainty_kind=setup.uncertainty,
        batch_size=setup.batch_size, amp_dtype=setup.amp_dtype, seed=setup.seed), _ahead(setup))


def _ahead(setup: EvaluationSetup) -> int:
    return 0 if setup.fast_path.cuda_graphs else setup.prefetch_cases


def _speed_note(setup: EvaluationSetup) -> str:
    fast = setup.fast_path
    compiled = (f"fast path: torch.compile mode {fast.compile_mode}, backend {fast.compile_backend}"
                f"{', channels_last' if fast.channels_last else ''} (the first batch compiles)"
                if fast.enabled else "eager (evaluation.fast_path)")
    return (f"{setup.members} member(s), batches of {setup.batch_size} samples across cases, {compiled}, "
            f"{_ahead(setup)} case(s) predicted ahead of the write-back")


def _cases(roles: pd.DataFrame, store: SliceStore, role: str) -> list[str]:
    """Cases of ``role`` for this run's folds; ``all`` = every case of the store (e.g. an external test set)."""
    if role == "all":
        return list(store.case_ids)
    return [c for c in roles.loc[roles["role"] == role, "case_id"] if c in store.case_ids]


def _roles(folds: pd.DataFrame, data: dict[str, Any], trained: TrainedModel) -> pd.DataFrame:
    """Roles from data.fold / data.val_fold, refused if they are not the ones the run was trained with."""
    roles = roles_for_run(folds, data)
    check_split(trained, split_record(roles))
    return roles


def _external_threshold(predictions: ExternalPredictions, store: SliceStore, folds: pd.DataFrame,
                        cases: CaseStore, evaluation: dict[str, Any], data: dict[str, Any]) -> RunArtifact:
    """The threshold of external probability maps, chosen as for our models: fixed, or swept on the validation
    fold's cases (their predictions must be in the folder too; Dice on the native grid, ours on the slice grid).
    A folder of binary masks has nothing to threshold: its mode is recorded as ``masks`` and no validation
    predictions are needed.

    Every file of the evaluated (and, for a sweep, the validation) cases is checked here, before any work, so a
    bad folder is refused with one message listing each bad file."""
    roles = roles_for_run(folds, data)
    spec = evaluation["threshold"]
    metas = {m["case_id"]: m for m in cases.metas()}
    evaluated = _cases(roles, store, evaluation.get("split", "test"))
    if not evaluated:
        raise ValueError(f"evaluation.split={evaluation.get('split', 'test')!r}: no such case in the slice store")
    contents = check_predictions(predictions, evaluated, metas)
    mode = threshold_mode(evaluation) if PROBABILITY in contents.values() else "masks"
    val_cases = _cases(roles, store, "val")[: spec.get("max_cases") or None] if mode == "sweep" else []
    check_predictions(predictions, val_cases, metas, " (validation-fold predictions, for the threshold sweep on "
                      "probability maps; or set evaluation.threshold.mode=fixed)")
    selection: dict[str, Any] = {"run_name": predictions.name, "kind": predictions.kind, "step": None,
                                 "predictions": str(predictions.folder), "split": split_record(roles),
                                 "contents": {kind: sum(contents[c] == kind for c in evaluated)
                                              for kind in sorted(set(contents.values()))},
                                 "mode": mode, "threshold": float(spec.get("value", 0.5)), "sweep": []}
    if mode == "sweep":
        if not val_cases:
            raise ValueError("evaluation.threshold.mode=sweep needs validation cases, and data.val_fold is none: "
                             "set evaluation.threshold.mode=fixed (evaluation.threshold.value) or a validation fold")
        probabilities, truth = {}, {}
        for case_id in val_cases:
            native = NativeGeometry.from_meta(metas[case_id])
            probabilities[case_id] = read_prediction(predictions, case_id, native).probability
            truth[case_id] = read_native_mask(metas[case_id]["mask_file"])[0]
        sweep = sweep_thresholds(probabilities, truth, spec["candidates"])
        chosen = best_threshold(sweep)
        selection.update(threshold=chosen, sweep=sweep.to_dict("records"), val_cases=val_cases,
                         note=_warn_grid_edge(predictions.name, sweep, chosen))
    logger.info("%s (predictions in %s: %s): threshold %.3f (%s)", predictions.name, predictions.folder,
                selection["contents"], selection["threshold"], mode)
    return RunArtifact(predictions.name, selection)


def _warn_grid_edge(run_name: str, sweep: pd.DataFrame, chosen: float) -> str | None:
    if note := grid_edge_note(sweep, chosen):
        logger.warning("%s: %s", run_name, note)
    return note


def select_threshold(training_run: TrainedRun | ExternalPredictions, store: SliceStore, folds: pd.DataFrame,
                     cases: CaseStore, evaluation: dict[str, Any], variants: dict[str, Any],
                     data: dict[str, Any]) -> RunArtifact:
    """Fixed, or the best of a sweep on the validation fold's cases (the test fold is never looked at)."""
    if isinstance(training_run, ExternalPredictions):
        return _external_threshold(training_run, store, folds, cases, evaluation, data)
    trained, setup = _load(training_run, store, evaluation, variants)
    roles = _roles(folds, data, trained)
    spec, mode = evaluation["threshold"], threshold_mode(evaluation)
    selection: dict[str, Any] = {"run_name": training_run.name, "kind": trained.kind, "step": trained.step,
                                 "split": split_record(roles),
                                 "mode": mode, "threshold": float(spec.get("value", 0.5)), "sweep": []}
    if mode == "sweep":
        started = time.perf_counter()
        val_cases = _cases(roles, store, "val")[: spec.get("max_cases") or None]
        if not val_cases:
            raise ValueError("evaluation.threshold.mode=sweep needs validation cases, and data.val_fold is none: "
                             "set evaluation.threshold.mode=fixed (evaluation.threshold.value) or a validation fold")
        probabilities = {p.case_id: p.probability for p in _predict(trained, setup, store, val_cases)}
        truth = {c: store.masks(store.case_rows(c)) for c in val_cases}
        sweep = sweep_thresholds(probabilities, truth, spec["candidates"])
        chosen = best_threshold(sweep)
        selection.update(threshold=chosen, sweep=sweep.to_dict("records"), val_cases=val_cases,
                         seconds=round(time.perf_counter() - started, 2),
                         note=_warn_grid_edge(training_run.name, sweep, chosen))
    logger.info("%s: threshold %.3f (%s)", training_run.name, selection["threshold"], mode)
    return RunArtifact(training_run.name, selection)


def _external_cases(predictions: ExternalPredictions, selection: dict[str, Any], store: SliceStore,
                    folds: pd.DataFrame, cases: CaseStore, evaluation: dict[str, Any],
                    data: dict[str, Any]) -> Iterator[RunArtifact]:
    """The external files as our three native-grid images: a mask file is the mask (the threshold does not touch
    it), a probability map is thresholded with the selected threshold; uncertainty is 0 (none was given)."""
    metas = {m["case_id"]: m for m in cases.metas()}
    threshold = float(selection["threshold"])
    for case_id in _cases(roles_for_run(folds, data), store, evaluation.get("split", "test")):
        native = NativeGeometry.from_meta(metas[case_id])
        case = read_prediction(predictions, case_id, native)
        mask = (case.probability > 0.5) if case.content == MASK else (case.probability >= threshold)
        yield RunArtifact(predictions.name, NativePrediction(case_id, mask.astype(np.uint8), case.probability,
                                                             np.zeros_like(case.probability), native.affine).images())


def predict_cases(training_run: TrainedRun | ExternalPredictions, selection: dict[str, Any], store: SliceStore,
                  folds: pd.DataFrame, cases: CaseStore, evaluation: dict[str, Any], variants: dict[str, Any],
                  data: dict[str, Any]) -> Iterator[RunArtifact]:
    """Mask, probability and uncertainty of every evaluated case on its native grid, one case at a time.

    A generator node: Kedro saves each case's three images as soon as they are yielded, so the predictions
    of a whole fold are never in memory together and no prediction runs inside a dataset's save.
    """
    if selection["run_name"] != training_run.name:
        raise ValueError(f"threshold_selection belongs to run {selection['run_name']}, training_run is "
                         f"{training_run.name}; run select_threshold for this run first")
    if isinstance(training_run, ExternalPredictions):
        yield from _external_cases(training_run, selection, store, folds, cases, evaluation, data)
        return
    trained, setup = _load(training_run, store, evaluation, variants)
    split_cases = _cases(_roles(folds, data, trained), store, evaluation.get("split", "test"))
    if not split_cases:
        raise ValueError(f"evaluation.split={evaluation.get('split', 'test')!r}: no such case in the slice store")
    metas = {m["case_id"]: m for m in cases.metas()}
    logger.info("Predicting %d cases: %s", len(split_cases), _speed_note(setup))
    # where the time goes (the sampler runs ahead in its thread): waiting for it, resampling, Kedro's writes
    waited = resampling = writing = 0.0
    started = since = time.perf_counter()
    predictions = _predict(trained, setup, store, split_cases)
    while (prediction := next(predictions, None)) is not None:
        mark = time.perf_counter()
        waited += mark - since
        case_id = prediction.case_id
        native = NativeGeometry.from_meta(metas[case_id])
        images = to_native(case_id, prediction.probability, prediction.uncertainty, store.geometry(case_id), native,
                           float(selection["threshold"]), setup.min_component_ml).images()
        resampling += time.perf_counter() - mark
        # batched across cases and made ahead of the write-back: the time since the last case was handed over
        logger.info("Predicted %s in %.1f s", case_id, time.perf_counter() - since)
        mark = time.perf_counter()
        yield RunArtifact(training_run.name, images)
        since = time.perf_counter()
        writing += since - mark
    logger.info("Predicted %d cases in %.1f s: %.1f s waiting for the sampler (compilation included), %.1f s "
                "resampling to the native grids, %.1f s writing NIfTI files", len(split_cases),
                time.perf_counter() - started, waited, resampling, writing)


def score_cases(predictions: dict[str, Callable[[], Any]], selection: dict[str, Any], cases: CaseStore,
                folds: pd.DataFrame, evaluation: dict[str, Any]) -> RunArtifact:
    """Per-case metrics of the model and of the threshold rules, all on the native grids; ``fold`` is the
    case's fold number (pooling cross-validation folds keeps it). Cases are scored in
    ``evaluation.scoring_workers`` processes (:mod:`isles_diffseg.evaluation.case_scoring`)."""
    metas = {m["case_id"]: m for m in cases.metas()}
    fold_of = dict(zip(folds["case_id"], folds["fold"].astype(int), strict=True))
    baselines = evaluation.get("baselines", {})
    rules = baselines if baselines.get("threshold_rules", True) else None
    tasks = []
    for key in sorted(k for k in predictions if k.endswith("_pred")):
        case_id = key[: -len("_pred")]
        image = predictions[key]()
        # a saved prediction travels to the worker as its path; an image without a file as its voxels
        path = image.get_filename() if isinstance(image, nib.Nifti1Image) else None
        tasks.append(ScoringTask(case_id, metas[case_id], str(path) if path else np.asarray(image.dataobj, np.uint8),
                                 selection["run_name"], fold_of.get(case_id), str(cases.root), rules))
    voxels = sum(int(np.prod(task.meta["native_shape"])) for task in tasks)
    workers = scoring_workers(evaluation.get("scoring_workers", "auto"), len(tasks), voxels=voxels)
    started = time.perf_counter()
    table = pd.DataFrame(score_case_tasks(tasks, workers))
    logger.info("Scored %d cases in %.1f s (%d process(es))", len(tasks), time.perf_counter() - started, workers)
    return RunArtifact(selection["run_name"], table)


def build_report(case_table: pd.DataFrame, selection: dict[str, Any], predictions: dict[str, Callable[[], Any]],
                 cases: CaseStore, manifest: pd.DataFrame, evaluation: dict[str, Any]) -> tuple:
    """Summary JSON, Markdown report and figures; logged to the active MLflow run as well.

    The report records the folds the run was evaluated with (chosen by data.fold / data.val_fold and checked
    against the run's, see ``selection["split"]``) and the release folder the evaluated cases were read from
    (``source_root`` of the case manifest, not the data.root parameter of this run)."""
    run_name = selection["run_name"]
    split = selection.get("split") or {}
    evaluated = manifest[manifest["case_id"].isin(case_table["case_id"])]
    roots = sorted(set(evaluated["source_root"].dropna())) if "source_root" in evaluated else []
    summary_by_method = summarise_methods(case_table)
    table = metric_table(summary_by_method)
    trained_sampling = {"discriminative": "deterministic UNet",
                        "external": f"external predictions from `{selection.get('predictions')}` "
                                    f"({selection.get('contents')})"}.get(selection.get("kind"))
    details = {
        "n_cases": int(case_table["case_id"].nunique()), "split": evaluation.get("split", "test"),
        "fold": split.get("test_fold"), "val_fold": split.get("val_fold"), "n_folds": split.get("n_folds"),
        "data_root": ", ".join(roots) or None, "threshold": float(selection["threshold"]),
        "threshold_mode": selection["mode"], "threshold_note": selection.get("note"),
        "min_component_ml": 0.0 if selection.get("kind") == "external" else min_component_ml(
            evaluation.get("min_component_ml", 0.0)),
        "sampling": trained_sampling or f"{evaluation.get('members', 5)} members, {evaluation.get('fusion', 'mean')} "
                                        f"fusion, {evaluation.get('diffusion') or 'the run’s diffusion variant'}",
    }
    report = markdown_report(run_name, table, case_table, details)
    logger.info("Evaluation of %s:\n%s", run_name, to_markdown(table))

    model_rows = case_table[case_table["method"] == run_name].sort_values("dice").reset_index(drop=True)
    picks = {"worst": 0, "median": len(model_rows) // 2, "best": len(model_rows) - 1}
    panels = []
    for label, i in picks.items():
        case_id = model_rows.loc[i, "case_id"]
        case = cases.load(case_id)
        prob = case.geometry.to_canonical(np.asarray(predictions[f"{case_id}_prob"]().dataobj))
        unc = case.geometry.to_canonical(np.asarray(predictions[f"{case_id}_uncertainty"]().dataobj))
        z = int(np.argmax(case.mask.sum(axis=(0, 1)))) if case.mask.any() else case.mask.shape[2] // 2
        panels.append({"label": label, "case_id": case_id, "dice": float(model_rows.loc[i, "dice"]),
                       "image": case.image[:, :, z, 0], "gt": case.mask[:, :, z], "prob": prob[:, :, z],
                       "uncertainty": unc[:, :, z]})
    figures = {"overlays.png": overlay_figure(panels), "dice_distribution.png": dice_distribution_figure(case_table),
               "volumes.png": volume_figure(case_table)}
    summary = {"run_name": run_name, "threshold": selection["threshold"], "threshold_mode": selection["mode"],
               "details": details, "methods": summary_by_method, "table": table.to_dict("records")}
    run_id = model_run_id(run_name)  # the evaluated model's MLflow run (created if it was trained elsewhere)
    if run_id is not None:
        log = ModelRunLogger(run_id)
        prefix = evaluation.get("mlflow_prefix", "test")
        metrics = {f"{prefix}_{m.replace('threshold_rule_', 'rule_') if m != run_name else 'model'}_{k}": v
                   for m, agg in summary_by_method.items() for k, v in agg.items()
                   if k.endswith("_mean") and v is not None and np.isfinite(v)}
        log.metrics({**metrics, f"{prefix}_threshold": float(selection["threshold"])})
        for name, fig in figures.items():
            log.figure(fig, f"evaluation/{name}")
        log.text(report, "evaluation/report.md")
        log.text(case_table.to_csv(index=False), "evaluation/case_metrics.csv")
    return (RunArtifact(run_name, summary), RunArtifact(run_name, report), RunArtifact(run_name, figures))
