"""torch.compile's portable cache carried from one device call to the next.

Every device call starts on a fresh machine, so each call compiled the same graphs again: ~75 s for the
16c sampler, ~150-190 s for the training step (benchmarks/README.md). ``torch.compiler.save_cache_artifacts``
serialises what a process compiled (FX graphs, AOTAutograd entries, Triton kernels, autotuning results), and
``load_cache_artifacts`` puts them back into the inductor caches of a new process, where the same graph on
the same GPU, torch and Triton then compiles from cache. A mismatch (other GPU or versions) is only a miss.

A benchmark process calls :func:`carry` once at its start with a folder (``COMPILE_CACHE_DIR``; the device
scripts use ``.compile_cache`` in the project root, git-ignored, carried into the call and packed into ``$OUT``
at its end): every ``*.bin`` there is loaded, and what this process compiles is saved there as ``<tag>.bin``
when it exits normally.
"""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

import torch


def carry(tag: str, directory: str | None = None) -> None:
    directory = directory or os.environ.get("COMPILE_CACHE_DIR")
    if not directory:
        return
    folder = Path(directory)
    for saved in sorted(folder.glob("*.bin")):
        started = time.perf_counter()
        torch.compiler.load_cache_artifacts(saved.read_bytes())
        print(f"compile cache: loaded {saved} ({saved.stat().st_size / 2**20:.1f} MiB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    atexit.register(_save, folder / f"{tag}.bin")


def _save(path: Path) -> None:
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:  # nothing was compiled in this process
        return
    data, _ = saved
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)  # a process killed while writing leaves no truncated cache behind
    print(f"compile cache: saved {len(data) / 2**20:.1f} MiB to {path}", flush=True)
