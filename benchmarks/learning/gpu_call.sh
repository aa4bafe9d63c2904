#!/usr/bin/env bash
# One device call: data once, then every arm of a plan at the same time on the one GPU.
#   bash benchmarks/learning/gpu_call.sh benchmarks/learning/plans/sweep.yml [deadline_s] [cases]
# Needs the nibabel, monai and connected-components-3d wheels in .whl (carried): python3 -m pip download --no-deps --only-binary=:all: \
#   --python-version 3.12 --platform manylinux2014_x86_64 -d .whl nibabel==5.4.2 monai==1.6.1 connected-components-3d==4.1.1 (add --platform manylinux_2_28_x86_64)
# $OUT: curves.jsonl, gpu_util.log, logs.tgz (each arm's log), compile_cache.tgz when COMPILE_CACHE_DIR is set.
# WHEELS=.whl_min: the three wheels alone (9.5 MiB) instead of the whole wheelhouse.
set -euo pipefail
plan=$1; deadline=${2:-420}; cases=${3:-40}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHEELS:-.whl}"/nibabel-*.whl "${WHEELS:-.whl}"/monai-*.whl "${WHEELS:-.whl}"/connected_components_3d-*.whl 2>&1 | grep -v WARNING || true
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
# opt-in (COMPILE_CACHE_DIR=.compile_cache): compiled graphs from the last call, and this call's for the next one
# (benchmarks/compile_cache.py; for the 16c model on an H200 the cache is 223 MiB, more than a device call returns)
if [ -n "${COMPILE_CACHE_DIR:-}" ]; then
  export COMPILE_CACHE_DIR=$(realpath -m "$COMPILE_CACHE_DIR"); mkdir -p "$COMPILE_CACHE_DIR"
  trap 'ls "$COMPILE_CACHE_DIR"/*.bin >/dev/null 2>&1 && tar czf "$out/compile_cache.tgz" -C "$COMPILE_CACHE_DIR" .' EXIT
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
start=$(date +%s)
python3 benchmarks/learning/driver.py prepare --work /tmp/learn --cases "$cases" --workers "$(nproc)"
(while sleep 30; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done) > "$out/gpu_util.log" &
python3 benchmarks/learning/driver.py sweep --work /tmp/learn --plan "$plan" --out "$out/curves.jsonl" --deadline-s "$deadline" ${ONLY:+--only $ONLY}
echo "call wall: $(( $(date +%s) - start )) s"
tar czf "$out/logs.tgz" -C "$out" curves_logs && rm -r "$out/curves_logs"  # the device returns 8 files at most
