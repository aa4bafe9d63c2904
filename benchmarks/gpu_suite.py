"""GPU measurements, run on the lent H100/H200 (see benchmarks/README.md for the numbers and commands).

    python benchmarks/gpu_suite.py prepare --root data/01_raw/isles24_realistic --cases 10
    python benchmarks/gpu_suite.py train-bench --store data/05_model_input/slices --out results.json
    python benchmarks/gpu_suite.py sample-bench --out sampling.json --models 16c --modes eager default
    python benchmarks/gpu_suite.py eval-bench --out eval.json --run-dir data/06_models/<run> --mode fast

(``benchmarks/gpu_speed_call.sh`` runs the sampling and evaluation measurements of issue 10 in one call.)

``prepare`` writes the `realistic` synthetic profile with one process per case (same cases as
``write_synthetic_dataset``: case i is drawn from ``default_rng([seed, i])``). ``train-bench`` times
training steps of the seed-named MedSegDiff variants through the real trainer path side by side (eager
vs the fast path: torch.compile, resident slices, fused AdamW; bf16), batch assembly alone, and checks
that the 8x8-head / 256-dim / 2-layer variant, which produced NaNs under bf16 in the earlier codebase,
stays finite for a few hundred bf16 steps on the fast path. ``sample-bench`` times DDIM sampling of the
MedSegDiff variants eager vs the sampling fast path (``warm-cache`` compiles them beforehand, in parallel);
``eval-bench`` times the evaluation of a slice store's cases in its parts (prediction, write-back, scoring).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def write_realistic_case(args: tuple[int, str, int, int]) -> str:
    import yaml

    from isles_diffseg.data.synthetic import LesionMix, generate_case, resolve_profile, write_case

    index, root, n_cases, seed = args
    params = yaml.safe_load((CONF / "parameters_synthetic.yml").read_text())["synthetic"]
    profile = resolve_profile("realistic", params["profiles"])
    case = generate_case(index, profile, np.random.default_rng([seed, index]), n_cases=n_cases,
                         lesion_mix=LesionMix.from_mapping(params["lesions"]), first_case_id=1,
                         mask_as_scaled_uint16=index == params["scaled_mask_index"])
    write_case(case, Path(root), threads=1)
    return case.case_id


def prepare(root: str, cases: int, seed: int, workers: int) -> None:
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        done = list(pool.map(write_realistic_case, [(i, root, cases, seed) for i in range(cases)]))
    print(f"wrote {len(done)} realistic cases in {time.perf_counter() - started:.1f} s")


def _trainer(store, model: str, batch: int, amp: str, steps: int, tmp: Path, fast_path: bool = False,
             device: str = "cuda", **recipe):
    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config
    from isles_diffseg.training.trainer import Trainer

    variants = {g: load_variant_group(g, CONF) for g in set(GROUP_OF_KEY.values())}
    training = {"model": model, "loss": "mse_with_aux_light", "optimizer": "adamw_1e4lr_wd00",
                "scheduler": "warmup_cosine_10pct", "augmentation": "aggressive_2d", "diffusion": "ddim50",
                "recipe": "train_100Kms_ampbfloat16", "max_steps": steps, "batch_size": batch, "amp": amp,
                "device": device, "fast_path": fast_path, **recipe,
                "run_name": f"bench_{model}_{amp}_{'fast' if fast_path else 'eager'}"}
    config = resolve_run_config(training, variants, image_channels=store.image_channels, image_size=store.image_size)
    config.recipe.update(val_interval=10**9, checkpoint_interval=10**9, max_consecutive_nonfinite=10**6)
    rows = store.index.loc[store.index["train_keep"], "row"].to_numpy()
    return Trainer(config, store, rows, [], tmp / config.run_name, show_progress=False)


def time_steps(trainer, warmup: int, steps: int) -> dict:
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train_step()  # with the fast path: compilation (cold cache) happens here
    torch.cuda.synchronize()
    first_step_s = time.perf_counter() - started
    for _ in range(warmup):
        trainer.train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    batch = int(trainer.config.recipe["batch_size"])
    return {"steps_per_s": steps / seconds, "images_per_s": steps * batch / seconds, "first_step_s": first_step_s,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "skipped": trainer.skipped_steps}


def time_loading(store, batch: int, batches: int = 200) -> dict:
    """Batch assembly alone: memory-mapped store + host-to-device copy vs the resident slices."""
    from isles_diffseg.training.batches import ResidentSlices, SliceBatchSampler, load_batch

    rows = store.index.loc[store.index["train_keep"], "row"].to_numpy()
    device = torch.device("cuda")
    sampler = SliceBatchSampler(rows, batch, seed=0)
    results = {}
    started = time.perf_counter()
    resident = ResidentSlices(store, rows, device)
    torch.cuda.synchronize()
    results["resident_load_s"] = time.perf_counter() - started
    for name, read in (("memmap", lambda r: load_batch(store, r, device)), ("resident", resident.batch)):
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(batches):
            read(sampler.next_batch())
        torch.cuda.synchronize()
        results[f"{name}_images_per_s"] = batches * batch / (time.perf_counter() - started)
    return results


BENCH_MODELS = {"16c": ("medsegdiff_256_4l_16c_6x4a_128t_1btl_large", 32),
                "32c_simple": ("medsegdiff_256_4l_32c_6x4a_128t_1btl_medium_simple", 16),
                "32c_8x8a": ("medsegdiff_256_4l_32c_8x8a_256t_2btl_medium", 16)}


def train_bench(store_path: str, out: str, stability_steps: int, timed_steps: int, models: list[str]) -> None:
    from isles_diffseg.data.slice_store import SliceStore

    store = SliceStore(store_path)
    tmp = Path(out).parent / "bench_runs"
    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                     "slices": len(store), "image_size": store.image_size}
    results["loading_b32"] = time_loading(store, 32)
    print(json.dumps(results["loading_b32"]), flush=True)
    if stability_steps:
        # bf16 stability of the variant that NaN'd before: every step's loss must stay finite
        trainer = _trainer(store, "medsegdiff_256_4l_32c_8x8a_256t_2btl_medium", 16, "bf16", stability_steps, tmp, True)
        losses = []
        for _ in range(stability_steps):
            metrics = trainer.train_step()
            losses.append(float("nan") if metrics is None else float(metrics["loss"]))
        results["stability_32c_8x8a_256t_2btl_bf16_fast"] = {
            "steps": stability_steps, "skipped_nonfinite": trainer.skipped_steps,
            "all_losses_finite": bool(np.isfinite(losses).all()), "first_loss": losses[0], "last_loss": losses[-1],
            "params_finite": all(torch.isfinite(p).all().item() for p in trainer.model.parameters()),
        }
        print(json.dumps(results["stability_32c_8x8a_256t_2btl_bf16_fast"]), flush=True)
        del trainer
        torch.cuda.empty_cache()
    # throughput side by side: the real trainer path, eager vs fast path (compile + resident slices + fused AdamW)
    for key in models:
        model, batch = BENCH_MODELS[key]
        for fast in (False, True):
            trainer = _trainer(store, model, batch, "bf16", timed_steps + 11, tmp, fast)
            name = f"train_{model}_b{batch}_bf16_{'fast' if fast else 'eager'}"
            results[name] = time_steps(trainer, 10, timed_steps)
            print(name, json.dumps(results[name]), flush=True)
            Path(out).write_text(json.dumps(results, indent=1))
            del trainer
            torch.cuda.empty_cache()
    Path(out).write_text(json.dumps(results, indent=1))
    print(f"{'measurement':<80} {'img/s':>8} {'peak GiB':>9} {'1st step s':>10}")
    for key, value in results.items():
        if key.startswith("train_"):
            print(f"{key:<80} {value['images_per_s']:>8.1f} {value['peak_gib']:>9.2f} {value['first_step_s']:>10.1f}")


SAMPLE_MODES = ("eager", "default", "reduce-overhead", "max-autotune-no-cudagraphs", "default+channels_last")
SAMPLE_MODELS = {"16c": "medsegdiff_256_4l_16c_6x4a_128t_1btl_large",
                 "32c_simple": "medsegdiff_256_4l_32c_6x4a_128t_1btl_medium_simple",
                 "32c_8x8a": "medsegdiff_256_4l_32c_8x8a_256t_2btl_medium",
                 "tiny": "medsegdiff_tiny_cpu"}  # tiny: the CPU smoke test of this script


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _sample_batches(model, chain, images, batches: int, amp_dtype, first_slice: int = 0) -> torch.Tensor:
    """DDIM over ``batches`` batches of the same images: batch b is ensemble member b of every slice (its noise
    keyed to (case, slice, member) as in evaluation). Returns the probabilities of the first batch."""
    from isles_diffseg.diffusion import ddim_sample, signal_to_probability
    from isles_diffseg.inference.keyed_noise import keyed_normal, sample_keys

    n = images.shape[0]
    first = None
    for member in range(batches):
        keys = sample_keys(0, torch.full((n,), 12345), torch.arange(first_slice, first_slice + n),
                           torch.full((n,), member)).to(images.device)
        result = ddim_sample(chain, model, images, respacing=None, eta=0.0, amp_dtype=amp_dtype,
                             noise=keyed_normal(keys, 0, (n, 1, *images.shape[2:])))
        if first is None:
            first = signal_to_probability(result.sample)
    return first


def warm_cache(out: str, key: str, modes: list[str], batch: int, device_name: str, size: int) -> None:
    """Compile one model in each compile mode (cold inductor cache: the compilation time of a fresh machine),
    so that later processes of the call (sample-bench, the evaluation) find the graphs in the disk cache.
    Run one per model side by side: compilation is CPU work, and the GPU is touched only by 2-step chains."""
    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.inference.compiled_denoiser import FixedBatchModel
    from isles_diffseg.inference.predict import build_diffusion
    from isles_diffseg.models import build_model

    device = torch.device(device_name)
    amp_dtype = torch.bfloat16 if device.type == "cuda" else None
    chain = build_diffusion(load_variant_group("diffusion", CONF)["ddim50"]).respaced(2)
    model = build_model(load_variant_group("model", CONF)[SAMPLE_MODELS[key]], image_size=size, image_channels=2,
                        init="default").to(device).eval()
    images = torch.rand(batch, 2, size, size, device=device)
    results = {"model": SAMPLE_MODELS[key], "batch": batch, "compile_s": {}}
    for mode in modes:
        torch._dynamo.reset()
        compile_mode, _, layout = mode.partition("+")
        runner = FixedBatchModel(model, batch, mode=compile_mode, channels_last=layout == "channels_last")
        started = time.perf_counter()
        try:
            with torch.no_grad():
                for _ in range(2):
                    _sample_batches(runner, chain, images, 1, amp_dtype)
            _sync(device)
            results["compile_s"][mode] = round(time.perf_counter() - started, 1)
        except Exception as error:
            results["compile_s"][mode] = f"failed: {type(error).__name__}: {error}"[:300]
        model.to(memory_format=torch.contiguous_format)
        print(f"cold compilation of {key} ({mode}): {results['compile_s'][mode]} s", flush=True)
        Path(out).write_text(json.dumps(results, indent=1))


def sample_bench(out: str, models: list[str], modes: list[str], batch: int, members: int, steps: str, device_name: str,
                 size: int, budget_s: float, timed_batches: int, eager_steps: str) -> None:
    """DDIM sampling throughput of MedSegDiff variants, eager vs the sampling fast path, at a fixed batch.

    Per model and mode: parameters, the warm-up (two 2-step chains: compilation for the fast path, from the
    disk cache if ``warm-cache`` ran before), then timed DDIM over ``timed_batches`` batches of ``batch``
    slices, each batch another ensemble member of the same slices (eager times one batch of ``eager_steps``
    steps and scales to ``steps``: an eager step costs the same all along the chain), peak memory, and the
    largest probability difference to eager after the 2-step warm-up chain (same images, same keyed noise).
    Batches are always full (evaluation fills them across slices, members and cases), so a ``members``-member
    ensemble samples ``members`` x ``batch`` member-slices at the measured rate: ensemble slices/s = rate / members. Results are written after every measurement; a measurement
    is not started once ``budget_s`` has passed (the rest are listed as skipped).
    """
    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.inference.compiled_denoiser import FixedBatchModel
    from isles_diffseg.inference.predict import build_diffusion
    from isles_diffseg.models import build_model

    began = time.perf_counter()
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda else None
    variants = load_variant_group("model", CONF)
    diffusion = build_diffusion(load_variant_group("diffusion", CONF)["ddim50"])
    chain, warmup_chain, eager_chain = diffusion.respaced(steps), diffusion.respaced(2), diffusion.respaced(eager_steps)
    # one model call per step: a chain of n steps costs n / N of the N-step chain at a constant rate per call
    eager_scale = chain.num_timesteps / eager_chain.num_timesteps
    results: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                     "batch": batch, "members": members, "steps": steps, "image_size": size,
                     "amp": "bf16" if cuda else "none", "measurements": [], "skipped": []}
    for key in models:
        name = SAMPLE_MODELS[key]
        torch.manual_seed(0)
        model = build_model(variants[name], image_size=size, image_channels=2, init="default").to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        images = torch.rand(batch, 2, size, size, generator=torch.Generator().manual_seed(1)).to(device)
        eager_warm = None
        for mode in modes:
            if time.perf_counter() - began > budget_s:
                results["skipped"].append(f"{key} {mode}")
                print(f"skipped {key} {mode}: past the {budget_s:.0f} s budget", flush=True)
                continue
            torch._dynamo.reset()  # every compiled mode compiles afresh in this process (the disk cache may hit)
            if mode == "eager":
                runner = model
            else:
                compile_mode, _, layout = mode.partition("+")
                runner = FixedBatchModel(model, batch, mode=compile_mode, channels_last=layout == "channels_last")
            row = {"model": name, "key": key, "params_m": round(params / 1e6, 2), "mode": mode}
            try:
                with torch.no_grad():
                    _sync(device)
                    started = time.perf_counter()
                    _sample_batches(runner, warmup_chain, images, 1, amp_dtype)
                    # CUDA graphs record on a later call; this one also serves the comparison with eager
                    warm = _sample_batches(runner, warmup_chain, images, 1, amp_dtype).float().cpu()
                    _sync(device)
                    row["warmup_s"] = round(time.perf_counter() - started, 1)
                    timed = 1 if mode == "eager" else timed_batches
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    started = time.perf_counter()
                    first = _sample_batches(runner, eager_chain if mode == "eager" else chain, images, timed, amp_dtype)
                    _sync(device)
                    seconds = time.perf_counter() - started
                    if mode == "eager":
                        seconds *= eager_scale
            except Exception as error:  # one failing mode (e.g. an autotuning failure) must not lose the others
                row["error"] = f"{type(error).__name__}: {error}"[:400]
                print(f"{key} {mode} failed: {row['error']}", flush=True)
                results["measurements"].append(row)
                Path(out).write_text(json.dumps(results, indent=1))
                continue
            finally:
                if mode != "eager":  # back to the plain module for the next mode
                    model.to(memory_format=torch.contiguous_format)
            samples_per_s = timed * batch / seconds
            row.update(timed_batches=timed, seconds=round(seconds, 2), slices_per_s=round(samples_per_s, 2),
                       member_slices_per_s=round(samples_per_s, 2),
                       ensemble_slices_per_s=round(samples_per_s / members, 2),
                       peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                       finite=bool(torch.isfinite(first).all()))
            if mode == "eager":
                row["timed_steps"] = eager_chain.num_timesteps
                eager_warm = warm
            elif eager_warm is not None:  # the same images and keyed noise through the 2-step chain
                row["max_abs_dp_vs_eager"] = round(float((warm - eager_warm).abs().max()), 4)
            results["measurements"].append(row)
            Path(out).write_text(json.dumps(results, indent=1))
            print(json.dumps(row), flush=True)
            del runner
            if cuda:
                torch.cuda.empty_cache()
        del model
    results["total_s"] = round(time.perf_counter() - began, 1)
    Path(out).write_text(json.dumps(results, indent=1))
    print_sample_table(results)


def print_sample_table(results: dict) -> None:
    """The measurements of one sample-bench result (also of a partial one, cut by its time limit)."""
    print(f"\nDDIM sampling, batch {results['batch']}, {results['steps']}, {results['amp']}, {results['device']} "
          f"(ensemble: {results['members']} members)")
    print(f"{'model':<52} {'params':>6} {'mode':<28} {'slices/s':>8} {'x eager':>7} {'ens. slices/s':>13} "
          f"{'peak GiB':>8} {'warm-up s':>9} {'max|dp|':>7}")
    eager_rate = {}
    for row in results["measurements"]:
        if "error" in row:
            print(f"{row['model']:<52} {row['params_m']:>5}M {row['mode']:<28} failed: {row['error'][:80]}")
            continue
        if row["mode"] == "eager":
            eager_rate[row["key"]] = row["slices_per_s"]
        ratio = row["slices_per_s"] / eager_rate[row["key"]] if row["key"] in eager_rate else float("nan")
        peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "-"
        print(f"{row['model']:<52} {row['params_m']:>5}M {row['mode']:<28} {row['slices_per_s']:>8.2f} {ratio:>7.2f} "
              f"{row['ensemble_slices_per_s']:>13.2f} {peak:>8} {row['warmup_s']:>9.1f} "
              f"{row.get('max_abs_dp_vs_eager', float('nan')):>7.4f}")
    if results.get("skipped"):
        print("skipped (time budget):", ", ".join(results["skipped"]))


def eval_bench(out: str, store_path: str, cases_path: str, run_dir: str, mode: str, compile_mode: str,
               max_cases: int | None, score_cases: int | None, scoring: str, members: int, diffusion: str,
               batch: int, device_name: str) -> None:
    """Evaluation of the store's cases, timed in its three parts as the pipeline runs them: prediction
    (cross-case batches, 5-member DDIM ensembles; the compile warm-up timed apart), write-back (resampling to
    the native grid and gzip NIfTI writes of pred/prob/uncertainty) and scoring (model + both threshold rules).
    ``max_cases`` / ``score_cases`` time a subset (eager prediction and serial scoring of 10 cases take minutes).
    """
    import tempfile

    import nibabel as nib

    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.data.case_store import CaseStore
    from isles_diffseg.data.orientation import NativeGeometry
    from isles_diffseg.data.slice_store import SliceStore
    from isles_diffseg.evaluation.case_scoring import ScoringTask
    from isles_diffseg.evaluation.case_scoring import score_cases as score_tasks
    from isles_diffseg.evaluation.native_grid import to_native
    from isles_diffseg.evaluation.settings import resolve_setup, scoring_workers
    from isles_diffseg.evaluation.trained_model import load_trained_model
    from isles_diffseg.inference.case_prediction import predict_cases
    from isles_diffseg.training.run_config import GROUP_OF_KEY

    device = torch.device(device_name)
    store, cases = SliceStore(store_path), CaseStore(cases_path)
    trained = load_trained_model(Path(run_dir), device)
    variants = {g: load_variant_group(g, CONF) for g in set(GROUP_OF_KEY.values())}
    setup = resolve_setup({"members": members, "diffusion": diffusion, "batch_size": batch,
                           "fast_path": mode == "fast", "compile_mode": compile_mode}, trained, variants, device)
    case_ids = list(store.case_ids)[:max_cases]
    metas = {m["case_id"]: m for m in cases.metas()}
    brain_slices = {c: int(store.brain(store.case_rows(c)).reshape(len(store.case_rows(c)), -1).any(1).sum())
                    for c in case_ids}
    model = setup.fast_path.wrap(trained.model, setup.batch_size)
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "mode": mode,
                     "compile_mode": compile_mode if mode == "fast" else None, "members": setup.members,
                     "diffusion": setup.diffusion_name, "batch": batch, "cases": len(case_ids),
                     "brain_slices": sum(brain_slices.values()), "run": Path(run_dir).name}
    # warm-up apart: the compilation (fast) or cuDNN's first calls (eager), on one full batch, 2 steps
    from isles_diffseg.diffusion import ddim_sample

    started = time.perf_counter()
    image = torch.from_numpy(store.images(store.case_rows(case_ids[0])[:1])).to(device).repeat(batch, 1, 1, 1)
    for _ in range(2):
        ddim_sample(setup.diffusion, model, image, respacing=2, amp_dtype=setup.amp_dtype)
    _sync(device)
    results["warmup_s"] = round(time.perf_counter() - started, 1)
    print(f"eval-bench {mode}: warm-up {results['warmup_s']} s", flush=True)

    predictions, per_case = [], []
    started = since = time.perf_counter()
    for prediction in predict_cases(model, store, case_ids, kind=trained.kind, diffusion=setup.diffusion,
                                    sampler=setup.sampler, device=device, members=setup.members, fusion=setup.fusion,
                                    uncertainty_kind=setup.uncertainty, batch_size=setup.batch_size,
                                    amp_dtype=setup.amp_dtype, seed=setup.seed):
        now = time.perf_counter()
        per_case.append({"case_id": prediction.case_id, "brain_slices": brain_slices[prediction.case_id],
                         "seconds": round(now - since, 2)})
        since = now
        predictions.append(prediction)
    seconds = time.perf_counter() - started
    slices = sum(brain_slices.values())
    results["prediction"] = {"seconds": round(seconds, 1), "slices_per_s": round(slices / seconds, 2),
                             "member_slices_per_s": round(slices * setup.members / seconds, 2), "per_case": per_case}
    print(f"prediction: {seconds:.1f} s, {slices / seconds:.2f} slices/s, "
          f"{slices * setup.members / seconds:.1f} member-slices/s", flush=True)

    folder = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    started = time.perf_counter()
    paths = {}
    for prediction in predictions:
        case_id = prediction.case_id
        images = to_native(case_id, prediction.probability, prediction.uncertainty, store.geometry(case_id),
                           NativeGeometry.from_meta(metas[case_id]), 0.5).images()
        for name, image in images.items():
            nib.save(image, str(folder / f"{name}.nii.gz"))
        paths[case_id] = str(folder / f"{case_id}_pred.nii.gz")
    results["writeback_s"] = round(time.perf_counter() - started, 1)
    print(f"write-back (native grid + NIfTI, 3 images per case): {results['writeback_s']} s", flush=True)
    del predictions

    scored = case_ids[:score_cases]
    workers = scoring_workers(scoring, len(scored))
    tasks = [ScoringTask(c, metas[c], paths[c], "bench", None, str(cases.root),
                         {"threshold_rules": True, "tmax_threshold_s": 6.0, "rcbf_threshold": 0.3,
                          "min_component_ml": 1.0}) for c in scored]
    started = time.perf_counter()
    rows = score_tasks(tasks, workers)
    results["scoring"] = {"seconds": round(time.perf_counter() - started, 1), "cases": len(scored),
                          "workers": workers, "rows": len(rows)}
    print(f"scoring {len(scored)} cases with {workers} process(es): {results['scoring']['seconds']} s", flush=True)
    Path(out).write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--root", required=True)
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--workers", type=int, default=10)
    t = sub.add_parser("train-bench")
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--stability-steps", type=int, default=300)
    t.add_argument("--timed-steps", type=int, default=50)
    t.add_argument("--models", nargs="+", default=list(BENCH_MODELS), choices=list(BENCH_MODELS))
    b = sub.add_parser("sample-bench")
    b.add_argument("--out", required=True)
    b.add_argument("--models", nargs="+", default=["16c", "32c_simple", "32c_8x8a"], choices=list(SAMPLE_MODELS))
    b.add_argument("--modes", nargs="+", default=["eager", "default", "reduce-overhead"], choices=SAMPLE_MODES)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--members", type=int, default=5)
    b.add_argument("--steps", default="ddim50")
    b.add_argument("--device", default="cuda")
    b.add_argument("--size", type=int, default=256)
    b.add_argument("--budget-s", type=float, default=300, help="start no measurement after this many seconds")
    b.add_argument("--timed-batches", type=int, default=2, help="DDIM runs of one batch timed per compiled mode")
    b.add_argument("--eager-steps", default="ddim10", help="eager is timed over this chain and scaled to --steps")
    w = sub.add_parser("warm-cache")
    w.add_argument("--out", required=True)
    w.add_argument("--model", required=True, choices=list(SAMPLE_MODELS))
    w.add_argument("--modes", nargs="+", default=["default"], choices=SAMPLE_MODES[1:])
    w.add_argument("--batch", type=int, default=64)
    w.add_argument("--device", default="cuda")
    w.add_argument("--size", type=int, default=256)
    r = sub.add_parser("sample-table", help="print the tables of sample-bench result files")
    r.add_argument("files", nargs="+")
    e = sub.add_parser("eval-bench")
    e.add_argument("--out", required=True)
    e.add_argument("--store", default="data/05_model_input/slices")
    e.add_argument("--cases-root", default="data/02_intermediate/cases")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--mode", choices=["eager", "fast"], default="fast")
    e.add_argument("--compile-mode", default="default")
    e.add_argument("--max-cases", type=int, default=None)
    e.add_argument("--score-cases", type=int, default=None)
    e.add_argument("--scoring-workers", default="auto")
    e.add_argument("--members", type=int, default=5)
    e.add_argument("--diffusion", default="ddim50")
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.root, args.cases, args.seed, args.workers)
    elif args.command == "sample-bench":
        sample_bench(args.out, args.models, args.modes, args.batch, args.members, args.steps, args.device, args.size,
                     args.budget_s, args.timed_batches, args.eager_steps)
    elif args.command == "sample-table":
        for file in args.files:
            print_sample_table(json.loads(Path(file).read_text()))
    elif args.command == "warm-cache":
        warm_cache(args.out, args.model, args.modes, args.batch, args.device, args.size)
    elif args.command == "eval-bench":
        eval_bench(args.out, args.store, args.cases_root, args.run_dir, args.mode, args.compile_mode, args.max_cases,
                   args.score_cases, args.scoring_workers, args.members, args.diffusion, args.batch, args.device)
    else:
        train_bench(args.store, args.out, args.stability_steps, args.timed_steps, args.models)


if __name__ == "__main__":
    main()
