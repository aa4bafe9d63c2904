"""Where the time goes: torch.profiler over training steps of the real trainer path and over DDIM sampling.

    python benchmarks/gpu_profile.py --store /tmp/prof/slices --out $OUT --models 16c --modes eager fast

For each model and mode (``eager``; ``fast`` = the training fast path, and for sampling the compiled
fixed-batch network of ``evaluation.fast_path``; ``fast+channels_last``, ``fast+reduce-overhead`` and
``fast+channels_last+reduce-overhead`` add the fast path's ``channels_last`` and CUDA-graph ``compile_mode``),
after a warm-up that includes any compilation:

* ``train``: ``--steps`` optimizer steps through ``Trainer.train_step`` (the trainer and settings of
  ``gpu_suite.py train-bench``: batch from the slice store, GPU augmentation, loss, clipping, AdamW, EMA);
* ``sample``: one DDIM chain of ``--sample-steps`` network calls at batch ``--sample-batch``.

It writes ``profile.json`` (per run: wall seconds per step, device-busy fraction = kernel time / wall time,
kernel time per operator family, the top kernels) and ``profile_<model>_<mode>_<what>.txt`` (the profiler's
operator table). Kernel time is attributed to the innermost operator that launched it, so the families add
up to the total; kernels launched by compiled (inductor) graphs are counted under ``compiled graph`` unless
the graph calls an aten operator (e.g. convolutions). On a CPU (``--device cpu``, a smoke test) the same
tables hold CPU time and no busy fraction.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from compile_cache import carry  # noqa: E402
from gpu_suite import BENCH_MODELS, CONF, SAMPLE_MODELS, _sample_batches, _sync, _trainer  # noqa: E402

# operator families, first match wins (aten operator names and the profiler's own region names)
FAMILIES = [
    ("convolution", r"conv|cudnn"),
    ("fft (FFParser)", r"fft"),
    ("attention", r"attention|flash|sdpa|softmax"),
    ("matmul", r"\b(aten::)?(mm|addmm|bmm|baddbmm|matmul|linear)\b"),
    ("normalisation", r"norm"),
    ("optimizer + EMA", r"adam|foreach|lerp|clip_grad"),
    ("augmentation", r"grid_sampler|affine_grid"),
    ("copies + casts", r"copy|_to_copy|contiguous|clone|memcpy|memset|cat\b"),
    ("compiled graph", r"compiled|inductor|triton|torchdynamo"),
]


def family(name: str) -> str:
    for label, pattern in FAMILIES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return label
    return "elementwise + other"


def summarise(prof: profile, seconds: float, steps: int, device: torch.device, top: int = 15) -> dict:
    """Kernel (CUDA) or CPU time per operator family and the top kernels, per step, in milliseconds."""
    events = prof.key_averages()
    cuda = device.type == "cuda"

    def own_ms(event) -> float:  # the event's own time (not its children's), microseconds -> ms
        return (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e3

    ops = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    families: dict[str, float] = {}
    for event in ops:
        label = family(event.key)
        families[label] = families.get(label, 0.0) + own_ms(event) / steps
    kernels = [e for e in events if e.device_type != torch.autograd.DeviceType.CPU] if cuda else ops
    kernels = sorted(kernels, key=own_ms, reverse=True)[:top]
    busy_ms = sum(families.values())
    return {
        "wall_ms_per_step": round(1e3 * seconds / steps, 2),
        "busy_fraction": round(busy_ms / (1e3 * seconds / steps), 3) if cuda else None,
        "time_ms_per_step": round(busy_ms, 2),
        "families_ms_per_step": {k: round(v, 2) for k, v in sorted(families.items(), key=lambda kv: -kv[1])},
        "top": [{"name": e.key[:120], "ms_per_step": round(own_ms(e) / steps, 3), "calls_per_step": e.count / steps}
                for e in kernels],
    }


def profiled(run_step, steps: int, device: torch.device) -> tuple[profile, float]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            run_step()
        _sync(device)
        seconds = time.perf_counter() - started
    return prof, seconds


MODES = ["eager", "fast", "fast+channels_last", "fast+reduce-overhead", "fast+channels_last+reduce-overhead"]


def mode_options(mode: str) -> tuple[bool, dict]:
    """``fast+channels_last+reduce-overhead`` -> (fast path on, {channels_last: True, compile_mode: ...})."""
    parts = mode.split("+")
    return parts[0] == "fast", {"channels_last": "channels_last" in parts,
                                "compile_mode": "reduce-overhead" if "reduce-overhead" in parts else "default"}


def profile_training(store, key: str, mode: str, steps: int, warmup: int, device: torch.device, tmp: Path):
    model, batch = BENCH_MODELS.get(key, (SAMPLE_MODELS.get(key), 4))
    fast, options = mode_options(mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = _trainer(store, model, batch, "bf16" if device.type == "cuda" else "none", steps + warmup + 1, tmp,
                       fast, device=device.type, **options)
    started = time.perf_counter()
    for _ in range(warmup + 1):  # the first step compiles (fast path)
        trainer.train_step()
    _sync(device)
    warm = time.perf_counter() - started
    started = time.perf_counter()  # the profiler's own overhead slows a host-bound step: time it without too
    for _ in range(steps):
        trainer.train_step()
    _sync(device)
    unprofiled = (time.perf_counter() - started) / steps
    prof, seconds = profiled(trainer.train_step, steps, device)
    return prof, seconds, {"batch": batch, "warmup_s": round(warm, 1), "skipped": trainer.skipped_steps,
                           "unprofiled_ms_per_step": round(1e3 * unprofiled, 2),
                           "unprofiled_images_per_s": round(batch / unprofiled, 1),
                           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def profile_sampling(key: str, mode: str, steps: int, batch: int, size: int, device: torch.device):
    """One DDIM chain of ``steps`` network calls, after a 2-step chain that compiles (fast) and warms up."""
    from isles_diffseg.config.variants import load_variant_group
    from isles_diffseg.inference.compiled_denoiser import FixedBatchModel
    from isles_diffseg.inference.predict import build_diffusion
    from isles_diffseg.models import build_model

    amp = torch.bfloat16 if device.type == "cuda" else None
    model = build_model(load_variant_group("model", CONF)[SAMPLE_MODELS[key]], image_size=size, image_channels=2,
                        init="default").to(device).eval()
    fast, options = mode_options(mode)
    runner = FixedBatchModel(model, batch, mode=options["compile_mode"], channels_last=options["channels_last"]) \
        if fast else model
    diffusion = build_diffusion(load_variant_group("diffusion", CONF)["ddim50"])
    chain = diffusion.respaced(f"ddim{steps}")
    images = torch.rand(batch, 2, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        started = time.perf_counter()
        _sample_batches(runner, diffusion.respaced(2), images, 1, amp)
        _sync(device)
        warm = time.perf_counter() - started
        started = time.perf_counter()
        _sample_batches(runner, chain, images, 1, amp)
        _sync(device)
        unprofiled = time.perf_counter() - started
        prof, seconds = profiled(lambda: _sample_batches(runner, chain, images, 1, amp), 1, device)
    return prof, seconds, {"batch": batch, "warmup_s": round(warm, 1),
                           "unprofiled_ms_per_call": round(1e3 * unprofiled / steps, 2),
                           "unprofiled_ddim50_slices_per_s": round(batch / (50 * unprofiled / steps), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="a slice store (e.g. benchmarks/learning/driver.py prepare)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", default=["16c"], choices=sorted(set(BENCH_MODELS) | set(SAMPLE_MODELS)))
    parser.add_argument("--modes", nargs="+", default=["eager", "fast"], choices=MODES)
    parser.add_argument("--what", nargs="+", default=["train", "sample"], choices=["train", "sample"])
    parser.add_argument("--steps", type=int, default=10, help="profiled training steps")
    parser.add_argument("--warmup", type=int, default=5, help="training steps before profiling (after the first)")
    parser.add_argument("--sample-steps", type=int, default=10, help="network calls of the profiled DDIM chain")
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    from isles_diffseg.data.slice_store import SliceStore

    carry("profile")  # COMPILE_CACHE_DIR: graphs an earlier device call compiled, and this run's for the next
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = SliceStore(args.store)
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "image_size": store.image_size, "runs": {}}
    for key in args.models:
        for mode in args.modes:
            for what in args.what:
                if what == "train":
                    prof, seconds, info = profile_training(store, key, mode, args.steps, args.warmup, device,
                                                           Path(tempfile.mkdtemp(prefix="profile_runs")))
                    steps = args.steps
                else:
                    prof, seconds, info = profile_sampling(key, mode, args.sample_steps, args.sample_batch,
                                                           store.image_size, device)
                    steps = args.sample_steps  # per network call
                name = f"{key}_{mode}_{what}"
                results["runs"][name] = {**info, **summarise(prof, seconds, steps, device)}
                averages = prof.key_averages()
                sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                (out / f"profile_{name}.txt").write_text(averages.table(sort_by=sort, row_limit=40))
                if device.type == "cuda":  # where the host's time goes (a host-bound step shows it here)
                    (out / f"profile_{name}_host.txt").write_text(
                        averages.table(sort_by="self_cpu_time_total", row_limit=40))
                (out / "profile.json").write_text(json.dumps(results, indent=1))
                run = results["runs"][name]
                print(f"{name}: {run['wall_ms_per_step']} ms per step, busy {run['busy_fraction']}, "
                      f"{json.dumps(run['families_ms_per_step'])}", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
