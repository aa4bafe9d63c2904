#!/usr/bin/env bash
# The GPU measurements of benchmarks/README.md, run on the lent machine from the project root with the
# wheelhouse carried in .whl (../shared/device/make_wheelhouse.sh .whl):
#   bash benchmarks/gpu_run.sh prepare     # 10 realistic synthetic cases -> data_processing at 256 px
#   bash benchmarks/gpu_run.sh train       # bf16 stability + throughput table + a Kedro training run (1 GPU, then 2)
#   bash benchmarks/gpu_run.sh evaluate    # evaluation of all 10 cases, 5-member DDIM-50 ensembles
#   bash benchmarks/gpu_run.sh quick-train # a 20-step 16c run (gpu16c_1gpu) so that evaluate has a model
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING || true
export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH KEDRO_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1 COLUMNS=200
export MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db MLFLOW_ARTIFACT_LOCATION=$PWD/mlartifacts
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'GPUs', torch.cuda.device_count())"
common="slicing.image_size=256,data.root=data/01_raw/isles24_realistic"
model="training.model=medsegdiff_256_4l_16c_6x4a_128t_1btl_large,training.loss=mse_with_aux_light,training.optimizer=adamw_1e4lr_wd00,training.scheduler=warmup_cosine_10pct,training.augmentation=aggressive_2d,training.diffusion=ddim50,training.recipe=train_100Kms_ampbfloat16,training.max_steps=300,training.batch_size=32,training.val_interval=300,training.checkpoint_interval=300,training.log_interval=50"
case "$1" in
  prepare)
    python3 benchmarks/gpu_suite.py prepare --root data/01_raw/isles24_realistic --cases 10 --workers 10
    /usr/bin/time -f "data_processing: %e s wall, %M KiB peak RSS" python3 -m kedro run --pipelines data_processing \
      --params "$common" > "$out/prepare.log" 2>&1 || { tail -30 "$out/prepare.log"; exit 1; }
    tail -1 "$out/prepare.log"; grep -E "Slice store" "$out/prepare.log" ;;
  train)
    python3 benchmarks/gpu_suite.py train-bench --store data/05_model_input/slices --out "$out/train_bench.json"
    for gpus in 1 2; do
      start=$(date +%s.%N)
      python3 -m kedro run --pipelines training --params "$common,$model,training.num_gpus=$gpus,training.run_name=gpu16c_${gpus}gpu" \
        > "$out/train_${gpus}gpu.log" 2>&1 || { tail -40 "$out/train_${gpus}gpu.log"; exit 1; }
      echo "kedro training on $gpus GPU(s): $(python3 -c "print(round($(date +%s.%N)-$start,1))") s wall"
      grep -E "Step 300/300|validation:" "$out/train_${gpus}gpu.log" | tail -2
    done ;;
  quick-train)
    python3 -m kedro run --pipelines training --params "$common,${model/max_steps=300/max_steps=20},training.val_interval=20,training.run_name=gpu16c_1gpu" \
      > "$out/quick_train.log" 2>&1 || { tail -40 "$out/quick_train.log"; exit 1; }
    grep -E "validation:" "$out/quick_train.log" | tail -1 ;;
  evaluate)
    start=$(date +%s.%N)
    python3 -m kedro run --pipelines evaluation --params "$common,evaluation.run=gpu16c_1gpu,evaluation.split=all,evaluation.members=5,evaluation.diffusion=ddim50,evaluation.threshold.mode=fixed,evaluation.batch_size=320" \
      > "$out/evaluate.log" 2>&1 || { tail -40 "$out/evaluate.log"; exit 1; }
    echo "kedro evaluation of 10 cases: $(python3 -c "print(round($(date +%s.%N)-$start,1))") s wall"
    grep -E "Predicted sub-stroke" "$out/evaluate.log" | tail -3
    python3 - <<'PY'
import os, re
log = open(os.path.join(os.environ.get("OUT", "/tmp/out"), "evaluate.log")).read()
t = [float(x) for x in re.findall(r"Predicted \S+ in ([0-9.]+) s", log)]
from isles_diffseg.data.slice_store import SliceStore
s = SliceStore("data/05_model_input/slices")
brain = int((s.index.brain_pixels > 0).sum())
print(f"prediction: {sum(t):.1f} s for {len(t)} cases, {brain} brain slices x 5 members -> {brain/sum(t):.2f} slices/s "
      f"({5*brain/sum(t):.1f} member-slices/s)")
PY
    ;;
esac
