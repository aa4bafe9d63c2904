"""Learning-at-scale experiments: many training arms on one GPU, curves and held-out test metrics.

Runs on the lent GPU machine without Kedro (only nibabel travels as a wheel); every arm goes through
the same library path as `kedro run --pipelines training,evaluation`: the training block is
``conf/base/parameters_training.yml`` merged with ``conf/<env>/parameters_training.yml`` (what
`kedro run --env isles24` trains), resolved with the variant files, and then the arm's overrides.

    python benchmarks/learning/driver.py prepare --work /tmp/learn --cases 40 --workers 16
    python benchmarks/learning/driver.py sweep --work /tmp/learn --plan benchmarks/learning/plans/sweep.yml \\
        --out $OUT/curves.jsonl --deadline-s 420

Each arm is a separate process (several share the GPU). Every line of the JSONL output is one record:
``{"arm", "type": "train"|"val"|"test"|"arm", ...}``; ``plot.py`` turns it into the curves and tables
of ``README.md``. Test metrics are the evaluation pipeline's: per-case ISLES'24 metrics on each case's
native grid, the Tmax > 6 s rule on the same cases.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


# ---- data ------------------------------------------------------------------------------------------
def _ingest(args: tuple[Any, str]) -> dict[str, Any]:
    from isles_diffseg.data.case_store import write_case
    from isles_diffseg.data.case_volume import preprocess_case

    files, cases_root = args
    data = yaml.safe_load((CONF / "base" / "parameters_data.yml").read_text())["data"]
    presets = yaml.safe_load((CONF / "base" / "parameters_ingestion.yml").read_text())["ingestion"]["window_presets"]
    case = preprocess_case(files, data["modalities"], presets[data["window_preset"]], preset_name=data["window_preset"])
    return write_case(Path(cases_root), case)


def _slice(args: tuple[str, str, int]) -> Any:
    from isles_diffseg.data.case_store import CaseStore
    from isles_diffseg.data.slice_store import CaseSlices

    cases_root, case_id, image_size = args
    interpolation = yaml.safe_load((CONF / "base" / "parameters_slicing.yml").read_text())["slicing"]["mask_interpolation"]
    return CaseSlices.from_case(CaseStore(cases_root).load(case_id), image_size, interpolation)


def prepare(work: Path, cases: int, workers: int, image_size: int, seed: int) -> None:
    """Realistic synthetic release -> case store -> slice store at ``image_size`` -> 5 folds."""
    from gpu_suite import write_realistic_case  # the same cases as benchmarks/README.md's GPU runs

    from isles_diffseg.data.discovery import discover_cases
    from isles_diffseg.data.folds import assign_folds
    from isles_diffseg.data.slice_store import SliceStoreWriter, lesion_free_keep_mask

    started = time.perf_counter()
    raw, cases_root, slices = work / "raw", work / "cases", work / "slices"
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_realistic_case, [(i, str(raw), cases, seed) for i in range(cases)]))
        generated = time.perf_counter()
        metas = list(pool.map(_ingest, [(f, str(cases_root)) for f in discover_cases(raw)]))
    ingested = time.perf_counter()
    data = yaml.safe_load((CONF / "base" / "parameters_data.yml").read_text())["data"]
    slicing = yaml.safe_load((CONF / "base" / "parameters_slicing.yml").read_text())["slicing"]
    with ProcessPoolExecutor(workers) as pool:
        sliced = list(pool.map(_slice, [(str(cases_root), m["case_id"], image_size) for m in metas]))
    writer = SliceStoreWriter(slices, n_slices=sum(m["canonical_shape"][2] for m in metas), channels=len(data["modalities"]),
                              image_size=image_size, meta={"modalities": list(data["modalities"]),
                                                           "window_preset": data["window_preset"], "context_slices": 0,
                                                           "channel_layout": "slice_major",
                                                           "mask_interpolation": slicing["mask_interpolation"]})
    for case_slices in sorted(sliced, key=lambda c: c.case_id):
        writer.add(case_slices)
    policy = slicing["lesion_free"]
    keep = lesion_free_keep_mask(writer.index(), policy=policy["policy"], keep_fraction=float(policy["keep_fraction"]),
                                 drop_outside_brain=bool(policy["drop_outside_brain"]), seed=int(data["seed"]))
    writer.close(train_keep=keep)
    splits = yaml.safe_load((CONF / "base" / "parameters_splits.yml").read_text())["splits"]
    folds = assign_folds([m["case_id"] for m in metas], [m["lesion_volume_ml"] or 0.0 for m in metas],
                         n_folds=int(data["n_folds"]), seed=int(data["seed"]), n_strata=int(splits["n_strata"]))
    folds.to_csv(work / "folds.csv", index=False)
    print(f"prepared {len(metas)} cases: generation {generated - started:.0f} s, ingestion {ingested - generated:.0f} s, "
          f"slicing {time.perf_counter() - ingested:.0f} s; folds {folds['fold'].value_counts().sort_index().tolist()}",
          flush=True)


# ---- one arm ---------------------------------------------------------------------------------------
def _soft_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _soft_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def training_block(env: str, section: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``training`` (or ``unet_baseline.training``) as `kedro run --env <env>` resolves it, plus overrides."""
    def read(path: Path) -> dict[str, Any]:
        block = yaml.safe_load(path.read_text()) if path.exists() else {}
        for key in section.split("."):
            block = (block or {}).get(key, {})
        return block or {}

    merged = _soft_merge(read(CONF / "base" / "parameters_training.yml"), read(CONF / env / "parameters_training.yml"))
    return _soft_merge(merged, overrides)


class JsonlSink:
    """The trainer's metric sink, appending one JSON line per logged window or validation."""

    def __init__(self, path: Path, arm: str):
        self.path, self.arm = path, arm

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"arm": self.arm, **record}, default=float) + "\n"
        with open(self.path, "a") as handle:  # one short append per line: concurrent arms do not interleave
            handle.write(line)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        kind = "val" if any(k.startswith("val_") for k in metrics) else "train"
        self.write({"type": kind, "step": step, "time": time.time(), **metrics})

    def log_validation(self, result: Any, step: int, modalities: list[str]) -> None:
        pass

    def log_checkpoint(self, path: Path) -> None:
        pass


def _roles(work: Path, fold: int) -> pd.DataFrame:
    from isles_diffseg.data.folds import assign_roles

    return assign_roles(pd.read_csv(work / "folds.csv"), test_fold=fold)


def test_metrics(run_dir: Path, work: Path, fold: int, settings: list[dict[str, Any]], sink: JsonlSink,
                 fast_path: str | bool = "auto") -> None:
    """Native-grid ISLES'24 metrics of the best checkpoint on the test fold, for each sampling setting.

    As `kedro run --pipelines evaluation` does by default, the threshold is swept on the validation fold's
    cases (``evaluation.threshold``) and applied to the test fold; rows at the fixed 0.5 are kept beside it
    (label ``<setting>`` vs ``<setting>@val``); ``+min1ml`` rows drop components under 1 mL, as the pipeline
    does by default since ``evaluation.min_component_ml`` (``<setting>@val+min1ml`` is what ``kedro run``
    reports; before that it was ``<setting>@val``). Scoring runs in a process pool over cases (the pipeline's
    :mod:`isles_diffseg.evaluation.case_scoring`); a mask two labels share is scored once.
    """
    import torch

    from isles_diffseg.baselines.threshold_rule import remove_small_components
    from isles_diffseg.data.case_store import CaseStore
    from isles_diffseg.data.orientation import NativeGeometry
    from isles_diffseg.data.slice_store import SliceStore
    from isles_diffseg.evaluation.case_scoring import ScoringTask, score_cases
    from isles_diffseg.evaluation.native_grid import to_native
    from isles_diffseg.evaluation.trained_model import load_trained_model
    from isles_diffseg.inference.case_prediction import predict_cases
    from isles_diffseg.inference.compiled_denoiser import SamplingFastPath
    from isles_diffseg.inference.predict import SamplerConfig, build_diffusion
    from isles_diffseg.metrics.threshold_selection import best_threshold, sweep_thresholds

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = torch.bfloat16 if device.type == "cuda" else None
    trained = load_trained_model(run_dir, device)
    # the evaluation pipeline's sampling fast path (compiled network, one batch shape; on with CUDA only)
    # (``eval_fast_path: false`` in an arm: eager, when compiling costs more than the few network calls it speeds up)
    model = SamplingFastPath.from_settings({"fast_path": fast_path}, device).wrap(trained.model, 64)
    store, cases = SliceStore(work / "slices"), CaseStore(work / "cases")
    metas = {m["case_id"]: m for m in cases.metas()}
    roles = _roles(work, fold)
    test_cases = sorted(roles.loc[roles["role"] == "test", "case_id"])
    val_cases = sorted(roles.loc[roles["role"] == "val", "case_id"])
    candidates = yaml.safe_load((CONF / "base" / "parameters_evaluation.yml").read_text())["evaluation"][
        "threshold"]["candidates"]
    workers = max(1, min(len(test_cases) * 2, (os.cpu_count() or 2) // 2))
    for setting in settings if trained.kind == "diffusion" else [{"respacing": None, "members": 1}]:
        variant = {**trained.config.diffusion, **({"respacing": setting["respacing"]} if setting["respacing"] else {})}
        diffusion = build_diffusion(variant) if trained.kind == "diffusion" else None
        sampler = SamplerConfig.from_variant(variant) if trained.kind == "diffusion" else None
        label = (f"{setting['respacing'] or trained.config.diffusion.get('respacing', '-')}x{setting['members']}"
                 if trained.kind == "diffusion" else "unet")

        def predictions(case_ids: list[str]) -> Any:  # cases batched together, as the evaluation pipeline does
            return predict_cases(model, store, case_ids, kind=trained.kind, diffusion=diffusion,  # noqa: B023
                                 sampler=sampler, device=device, members=int(setting["members"]),  # noqa: B023
                                 batch_size=64, amp_dtype=amp, seed=0)

        started = time.perf_counter()
        threshold, sweep_rows = 0.5, []
        if setting.get("sweep", True) and val_cases:
            sweep = sweep_thresholds({p.case_id: p.probability for p in predictions(val_cases)},
                                     {c: store.masks(store.case_rows(c)) for c in val_cases}, candidates)
            threshold, sweep_rows = best_threshold(sweep), sweep.to_dict("records")
        val_seconds = time.perf_counter() - started
        # rounds 14-15 also wrote `@val09` rows (a 0.2-0.9 grid beside the then 0.2-0.8 one); since then the
        # pipeline's own grid reaches 0.9 and `@val` is cut on it
        thresholds = {"": 0.5, "@val": threshold}
        tasks, names = [], []  # names[i]: the settings task i's metrics are reported under
        for prediction in predictions(test_cases):
            case_id = prediction.case_id
            meta = metas[case_id]
            native = NativeGeometry.from_meta(meta)
            # resampled once; each threshold then cuts the native-grid probability as to_native does
            probability = to_native(case_id, prediction.probability, prediction.uncertainty, store.geometry(case_id),
                                    native, 0.5).probability
            for value in sorted(set(thresholds.values())):
                pred = (probability >= value).astype(np.uint8)
                # beside it, the mask without components under 1 mL (as the Tmax rule does): how much of the
                # lesion-F1 gap is scattered small blobs
                cleaned = remove_small_components(pred, native.zooms(), 1.0).astype(np.uint8)
                for mask, tail in ((pred, ""), (cleaned, "+min1ml")):
                    tasks.append(ScoringTask(case_id, meta, mask, label, fold, str(work / "cases"), None))
                    names.append([label + suffix + tail for suffix, v in thresholds.items() if v == value])
        predicted = time.perf_counter()
        for settings_of_mask, row in zip(names, score_cases(tasks, workers), strict=True):
            metrics = {k: v for k, v in row.items() if k not in ("method", "fold", "case_id")}
            for name in settings_of_mask:
                sink.write({"type": "test", "fold": fold, "step": trained.step, "case_id": row["case_id"],
                            "setting": name, "threshold": threshold if "@val" in name else 0.5, **metrics})
        sink.write({"type": "test_time", "fold": fold, "setting": str(setting), "cases": len(test_cases),
                    "seconds": time.perf_counter() - started, "val_predict_s": val_seconds,
                    "test_predict_s": predicted - started - val_seconds, "scoring_s": time.perf_counter() - predicted,
                    "threshold": threshold, "sweep": sweep_rows})


def rule_metrics(work: Path, fold: int, sink: JsonlSink) -> None:
    """The Tmax > 6 s rule (and its rCBF variant) on the same test cases and grids."""
    from isles_diffseg.data.case_store import CaseStore
    from isles_diffseg.data.orientation import NativeGeometry
    from isles_diffseg.evaluation.baselines import threshold_rule_masks
    from isles_diffseg.evaluation.case_metrics import case_metrics
    from isles_diffseg.evaluation.native_grid import read_native_mask

    cases = CaseStore(work / "cases")
    metas = {m["case_id"]: m for m in cases.metas()}
    roles = _roles(work, fold)
    params = yaml.safe_load((CONF / "base" / "parameters_evaluation.yml").read_text())["evaluation"]["baselines"]
    for case_id in sorted(roles.loc[roles["role"] == "test", "case_id"]):
        meta = metas[case_id]
        native = NativeGeometry.from_meta(meta)
        gt, spacing = read_native_mask(meta["mask_file"])
        for method, mask in threshold_rule_masks(meta, native.to_native(cases.brain(case_id)), spacing, params).items():
            sink.write({"type": "test", "fold": fold, "case_id": case_id, "setting": method,
                        **case_metrics(mask, gt, spacing, native)})


def run_arm(work: Path, arm: dict[str, Any], out: Path, env: str) -> None:
    import torch

    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.data.slice_store import SliceStore
    from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config
    from isles_diffseg.training.trainer import Trainer
    from isles_diffseg.training.validation import select_validation_cases

    name, fold = arm["name"], int(arm.get("fold", 0))
    sink = JsonlSink(out, name)
    if arm.get("bench"):  # throughput side by side (eager vs fast path) on this arm's GPU, before its learning arms
        from gpu_suite import train_bench

        bench = arm["bench"]
        train_bench(str(work / "slices"), str(out.parent / f"{name}.json"), int(bench.get("stability_steps", 0)),
                    int(bench.get("timed_steps", 40)), list(bench.get("models", ["16c"])))
        return
    if arm.get("rules"):
        rule_metrics(work, fold, sink)
        return
    store = SliceStore(work / "slices")
    section = "unet_baseline.training" if arm.get("unet") else "training"
    training = training_block(env, section, {**arm.get("training", {}), "run_name": name, "device": "auto"})
    variants = {g: load_variant_group(g, CONF / "base") for g in set(GROUP_OF_KEY.values())}
    config = resolve_run_config(training, variants, image_channels=store.image_channels, image_size=store.image_size)
    for group in ("model", "loss", "diffusion", "recipe", "optimizer", "scheduler"):  # key-level arm overrides
        getattr(config, group).update(arm.get(group, {}))
    roles = _roles(work, fold)
    train_cases = set(roles.loc[roles["role"] == "train", "case_id"])
    index = store.index
    rows = index.loc[index["case_id"].isin(train_cases) & index["train_keep"], "row"].to_numpy()
    val_cases = select_validation_cases(roles[roles["role"] == "val"], config.recipe.get("val_max_cases"))
    sink.write({"type": "arm", "fold": fold, "config": config.to_dict(), "train_slices": len(rows),
                "val_cases": val_cases, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"})
    started = time.perf_counter()
    trainer = Trainer(config, store, rows, val_cases, work / "runs" / name, sink=sink, show_progress=False)
    result = trainer.fit()
    sink.write({"type": "trained", "fold": fold, "seconds": time.perf_counter() - started, "steps": result.steps,
                "best_metric": result.best_metric, "best_step": result.best_step,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None})
    if not result.interrupted and arm.get("evaluate") != []:  # evaluate: [] = validation curves only
        test_metrics(work / "runs" / name, work, fold, arm.get("evaluate", [{"respacing": None, "members": 1}]), sink,
                     arm.get("eval_fast_path", "auto"))


# ---- many arms at once ------------------------------------------------------------------------------
def sweep(work: Path, plan_path: Path, out: Path, deadline_s: float, only: list[str] | None) -> None:
    """Every arm of the plan as its own process; stragglers are stopped at the deadline.

    An arm's ``gpu`` (default 0, taken modulo the GPUs present) picks its GPU. Arms on one GPU run at the
    same time, or one after another when the plan says ``per_gpu: sequential`` (processes on one GPU
    time-slice it: round 1 measured no throughput gain from running them together).
    """
    import threading

    import torch

    plan = yaml.safe_load(plan_path.read_text())
    defaults = plan.get("defaults", {})
    arms = [_soft_merge(defaults, arm) for arm in plan["arms"] if not only or arm["name"] in only]
    n_gpus = max(1, torch.cuda.device_count())
    queues: dict[int, list[dict[str, Any]]] = {}
    for arm in arms:
        queues.setdefault(int(arm.get("gpu", 0)) % n_gpus, []).append(arm)
    sequential = plan.get("per_gpu", "concurrent") == "sequential"
    at_once = len(queues) if sequential else len(arms)
    threads = str(max(1, (os.cpu_count() or 2) // max(1, at_once)))
    logs = out.parent / f"{out.stem}_logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    deadline = time.time() + deadline_s

    def start(arm: dict[str, Any], gpu: int) -> subprocess.Popen:
        command = [sys.executable, __file__, "arm", "--work", str(work), "--out", str(out), "--env",
                   plan.get("env", "isles24"), "--arm-json", json.dumps(arm)]
        log = open(logs / f"{arm['name']}.log", "w")  # noqa: SIM115 - the child writes to it until it exits
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": str(gpu)}
        procs[arm["name"]] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        return procs[arm["name"]]

    def run_queue(gpu: int, queue: list[dict[str, Any]]) -> None:
        for arm in queue:
            if time.time() >= deadline:
                print(f"{arm['name']}: not started (deadline)", flush=True)
                continue
            proc = start(arm, gpu)
            while sequential and proc.poll() is None:
                time.sleep(2)

    runners = [threading.Thread(target=run_queue, args=item) for item in queues.items()]
    for runner in runners:
        runner.start()
    while (any(r.is_alive() for r in runners) or any(p.poll() is None for p in procs.values())) and time.time() < deadline:
        time.sleep(2)
    for name, proc in list(procs.items()):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the trainer saves latest.pt; the curve so far is already written
            print(f"{name}: stopped at the deadline", flush=True)
    for runner in runners:
        runner.join()
    for name, proc in procs.items():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"{name}: exit {proc.returncode}; log tail:\n" + "\n".join((logs / f"{name}.log").read_text().splitlines()[-4:]),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=2024)
    s = sub.add_parser("sweep")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--plan", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--deadline-s", type=float, default=480)
    s.add_argument("--only", nargs="*")
    a = sub.add_parser("arm")
    a.add_argument("--work", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--env", default="isles24")
    a.add_argument("--arm-json", required=True)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.work, args.cases, args.workers, args.image_size, args.seed)
    elif args.command == "sweep":
        sweep(args.work, args.plan, args.out, args.deadline_s, args.only)
    else:
        arm = json.loads(args.arm_json)
        from compile_cache import carry

        carry(arm["name"])  # COMPILE_CACHE_DIR: graphs an earlier device call compiled, and this arm's for the next
        run_arm(args.work, arm, args.out, args.env)


if __name__ == "__main__":
    main()
