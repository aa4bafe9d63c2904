#!/usr/bin/env bash
# Issue 10's "profile first", in one device call: where a training step (the real trainer path) and a DDIM
# network call of the 16c MedSegDiff spend the GPU's time, eager and fast path side by side (gpu_profile.py).
#   device tool: command `WHEELS=.whl_min bash benchmarks/gpu_profile_call.sh`, carry [".whl_min"] (nibabel, monai
#   and connected-components-3d wheels, as for benchmarks/learning/gpu_call.sh); PROFILE_MODELS="16c 32c_simple"
#   adds models (each ~4 more minutes, most of it compilation).
# Measured on one H200 (2026-12-01, 379 s): data 27 s, eager runs ~30 s, compilation 150 s (training) + 47 s
# (sampling). Each further fast mode compiles again (~200 s): the levers need their own calls, e.g.
#   PROFILE_MODES="fast+channels_last fast+reduce-overhead" PROFILE_WHAT=train bash benchmarks/gpu_profile_call.sh
# $OUT gets profile.json (per run: ms per step, device-busy fraction, kernel time by operator family, top
# kernels, unprofiled rates, peak memory) and profile_tables.tgz (the profiler's operator tables, by device time
# and by host time).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHEELS:-.whl}"/nibabel-*.whl "${WHEELS:-.whl}"/monai-*.whl \
  "${WHEELS:-.whl}"/connected_components_3d-*.whl 2>&1 | grep -v WARNING || true
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
# opt-in (COMPILE_CACHE_DIR=.compile_cache, benchmarks/compile_cache.py): the 16c model's cache is 223 MiB on an
# H200, more than a device call returns
[ -n "${COMPILE_CACHE_DIR:-}" ] && { export COMPILE_CACHE_DIR=$(realpath -m "$COMPILE_CACHE_DIR"); mkdir -p "$COMPILE_CACHE_DIR"; }
pack() {
  (cd "$out" && ls profile_*.txt >/dev/null 2>&1 && tar czf profile_tables.tgz profile_*.txt && rm -f profile_*.txt)
  [ -n "${COMPILE_CACHE_DIR:-}" ] && ls "$COMPILE_CACHE_DIR"/*.bin >/dev/null 2>&1 && tar czf "$out/compile_cache.tgz" -C "$COMPILE_CACHE_DIR" . || true
}
trap pack EXIT
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 benchmarks/learning/driver.py prepare --work /tmp/prof --cases 8 --workers "$(nproc)"
timeout "${PROFILE_TIMEOUT_S:-500}" python3 benchmarks/gpu_profile.py --store /tmp/prof/slices --out "$out" \
  --models ${PROFILE_MODELS:-16c} --modes ${PROFILE_MODES:-eager fast} --what ${PROFILE_WHAT:-train sample}
