"""GPU measurements, run on the lent H100/H200 (see benchmarks/README.md for the numbers and commands).

    python benchmarks/gpu_suite.py prepare --root data/01_raw/isles24_realistic --cases 10
    python benchmarks/gpu_suite.py train-bench --store data/05_model_input/slices --out results.json

``prepare`` writes the `realistic` synthetic profile with one process per case (same cases as
``write_synthetic_dataset``: case i is drawn from ``default_rng([seed, i])``). ``train-bench`` times
training steps of the seed-named MedSegDiff variants through the real trainer path side by side (eager
vs the fast path: torch.compile, resident slices, fused AdamW; bf16), batch assembly alone, and checks
that the 8x8-head / 256-dim / 2-layer variant, which produced NaNs under bf16 in the earlier codebase,
stays finite for a few hundred bf16 steps on the fast path.
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


def _trainer(store, model: str, batch: int, amp: str, steps: int, tmp: Path, fast_path: bool = False):
    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config
    from isles_diffseg.training.trainer import Trainer

    variants = {g: load_variant_group(g, CONF) for g in set(GROUP_OF_KEY.values())}
    training = {"model": model, "loss": "mse_with_aux_light", "optimizer": "adamw_1e4lr_wd00",
                "scheduler": "warmup_cosine_10pct", "augmentation": "aggressive_2d", "diffusion": "ddim50",
                "recipe": "train_100Kms_ampbfloat16", "max_steps": steps, "batch_size": batch, "amp": amp,
                "device": "cuda", "fast_path": fast_path,
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


def sample_bench(out: str, slices: int, members: int, steps: str) -> None:
    """DDIM sampling throughput of the 16c MedSegDiff at 256 px, bf16 vs fp32, batch = slices x members."""
    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.diffusion import GaussianDiffusion, ddim_sample, sample_ensemble
    from isles_diffseg.models import build_model

    config = load_variant_group("model", CONF)["medsegdiff_256_4l_16c_6x4a_128t_1btl_large"]
    model = build_model(config).cuda().eval()
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000, "epsilon")
    image = torch.rand(slices, 2, 256, 256, device="cuda")
    results = {"device": torch.cuda.get_device_name(), "slices": slices, "members": members, "respacing": steps}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
        def run(dtype=dtype):
            generator = torch.Generator("cuda").manual_seed(0)
            return sample_ensemble(ddim_sample, diffusion, model, image, members=members, respacing=steps,
                                   amp_dtype=dtype, generator=generator)

        run()  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        probabilities = run()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        assert torch.isfinite(probabilities).all()
        results[name] = {"seconds": seconds, "slices_per_s": slices / seconds,
                         "member_slices_per_s": slices * members / seconds,
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        print(f"sampling {name}: {slices} slices x {members} members, {steps}: {seconds:.2f} s, "
              f"{slices / seconds:.1f} slices/s, {slices * members / seconds:.1f} member-slices/s, "
              f"peak {results[name]['peak_gib']:.1f} GiB")
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
    b.add_argument("--slices", type=int, default=64)
    b.add_argument("--members", type=int, default=5)
    b.add_argument("--steps", default="ddim50")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.root, args.cases, args.seed, args.workers)
    elif args.command == "sample-bench":
        sample_bench(args.out, args.slices, args.members, args.steps)
    else:
        train_bench(args.store, args.out, args.stability_steps, args.timed_steps, args.models)


if __name__ == "__main__":
    main()
