"""How to compute the linear attention's context product: float32 as today, split-K float32, or bf16.

    PYTHONPATH=src python benchmarks/linear_attention_bench.py --out $OUT/linear_attention.json

The profile (benchmarks/README.md, "Where the time goes") put MedSegDiff's float32 ``einsum("bhdn,bhen->bhde")``
(4 x 4 outputs per head summed over every pixel) at 14.1 of the 51.6 ms of a compiled 16c sampling call on an
H200: cuBLAS runs that shape as a GEMV-like kernel over batch x heads. This times the product alone, forward and
backward, at each resolution of the 16c model, for three forms, and measures each one's error against a float64
reference (the reason the product is in float32 is precision, so a faster form must show it keeps it):

* ``float32``: ``models/medsegdiff_blocks.LinearAttention`` today;
* ``splitk``: the same float32 product over ``--chunks`` pixel chunks, then summed (more, shorter products);
* ``bf16``: bf16 inputs, cuBLAS accumulating in float32, the bf16 result upcast.

No decision is coded here: a form that pays goes into ``LinearAttention`` with the GPU's bf16 stability check of the
32c 8x8a variant (``gpu_suite.py train-bench``) in the same call.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def context_float32(k: torch.Tensor, v: torch.Tensor, _chunks: int) -> torch.Tensor:
    return torch.einsum("bhdn,bhen->bhde", k, v)


def context_splitk(k: torch.Tensor, v: torch.Tensor, chunks: int) -> torch.Tensor:
    b, h, d, n = k.shape
    ks, vs = k.reshape(b, h, d, chunks, n // chunks), v.reshape(b, h, v.shape[2], chunks, n // chunks)
    return torch.einsum("bhdsl,bhesl->bhsde", ks, vs).sum(dim=2)


def context_bf16(k: torch.Tensor, v: torch.Tensor, _chunks: int) -> torch.Tensor:
    return torch.einsum("bhdn,bhen->bhde", k.bfloat16(), v.bfloat16()).float()


FORMS = {"float32": context_float32, "splitk": context_splitk, "bf16": context_bf16}


def inputs(batch: int, heads: int, head_dim: int, pixels: int, device: torch.device, seed: int = 0):
    """k softmaxed over the pixels and v of unit scale, as LinearAttention makes them."""
    generator = torch.Generator().manual_seed(seed)
    k = torch.randn(batch, heads, head_dim, pixels, generator=generator).softmax(dim=-1)
    v = torch.randn(batch, heads, head_dim, pixels, generator=generator)
    return k.to(device), v.to(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - started) / repeats


def measure(batch: int, heads: int, head_dim: int, side: int, chunks: int, repeats: int, device: torch.device) -> dict:
    k, v = inputs(batch, heads, head_dim, side * side, device)
    reference = torch.einsum("bhdn,bhen->bhde", k.double(), v.double())
    rows = {}
    for name, form in FORMS.items():
        error = ((form(k, v, chunks).double() - reference).abs().max() / reference.abs().max()).item()
        kg, vg = k.clone().requires_grad_(), v.clone().requires_grad_()

        def forward_backward(form=form, kg=kg, vg=vg):
            form(kg, vg, chunks).sum().backward()

        rows[name] = {"forward_ms": round(timed(lambda form=form: form(k, v, chunks), repeats, device), 3),
                      "forward_backward_ms": round(timed(forward_backward, repeats, device), 3),
                      "max_rel_error": error}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=64, help="64: the sampling batch; training uses 32")
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=4)
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 128, 64, 32], help="the 16c model's levels")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
               "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "chunks": args.chunks, "sides": {}}
    for side in args.sides:
        results["sides"][side] = measure(args.batch, args.heads, args.head_dim, side, args.chunks, args.repeats, device)
        print(side, json.dumps(results["sides"][side]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
