#!/usr/bin/env bash
# Issue 11's GPU check: one 2-combination grid (x 1 fold) and one 2-trial Optuna study, end to end through
# submitit's local executor, then both reports; prints the wall time of every command and what MLflow holds
# (the campaign parents, their runs, the model runs under them: status, key metrics, artifacts).
#
#   GPU machine, from the project root, with the wheelhouse carried (device tool: carry [".whl"]):
#     bash benchmarks/campaign_gpu.sh
#   here, a CPU smoke test of the same script (tiny data at 32 px, a few steps, CPU, ~10 min on 2 cores):
#     CAMPAIGN_GPU_SMOKE=1 nice -n 10 bash benchmarks/campaign_gpu.sh
#
# The wheelhouse: ../shared/device/make_wheelhouse.sh .whl, then rm .whl/plotly-* .whl/kedro_viz-* .whl/jedi-*
# (~49 MiB; the runs need none of the three). Everything happens in a scratch copy of the project (conf/ and
# pyproject.toml; the package comes from src/), so data/, mlflow.db and conf/local of this checkout are left
# alone. What comes back in $OUT (the device returns at most 8 files): campaign_gpu.log (this output),
# mlflow_summary.json, campaign_gpu.tgz (both campaign folders: reports, tables, figures, plan, study db,
# submitit job logs; each run's report.md/summary.json/case_metrics.csv; every command's log).
#
# Sized for one H200 within 9 minutes (the device's 10-minute command limit: 547 s measured, 2026-12-01);
# CAMPAIGN_GPU_CASES (10) and CAMPAIGN_GPU_STEPS (60) set the size. Each run costs ~50 s of start-up whatever
# its length, so 4 runs of 200 steps on 16 cases (~800 s) do not fit one call; 60 steps check the machinery and
# do not learn.
# - data: CAMPAIGN_GPU_CASES synthetic cases of the realistic head and lesion model at half its in-plane resolution
#   (256 x 256-316 at 0.80-0.90 mm) and 4 mm slices (32-50), sliced to 256 px. Ingestion is serial and costs
#   ~7 s per full-size realistic case (README), which 10 cases could not afford here.
# - each run: the isles24 recipe (16c MedSegDiff, x0 loss with Dice/BCE, bf16) for CAMPAIGN_GPU_STEPS
#   steps at batch 16, validation every half (so the pruner sees two reports), eager: the training and sampling
#   fast paths compile for ~150 s per process (benchmarks/README.md), more than such a run trains, and every
#   run of a campaign is a new process. Evaluation: 1 member, fixed threshold 0.5.
# - 2 GPUs: the grid's two runs and two study workers run side by side (one GPU each); on one GPU one by one.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
smoke=${CAMPAIGN_GPU_SMOKE:-0}
out=${OUT:-/tmp/campaign_gpu_out}
work=${CAMPAIGN_GPU_WORK:-$(mktemp -d /tmp/campaign_gpu.XXXXXX)}
deadline_s=${CAMPAIGN_GPU_DEADLINE_S:-$([ "$smoke" = 1 ] && echo 3600 || echo 540)}  # 540: time left to pack within 600 s
mkdir -p "$out" "$work/logs"
started=$(date +%s)
exec > >(tee -a "$out/campaign_gpu.log") 2>&1

export KEDRO_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1 COLUMNS=200
if [ "$smoke" = 1 ]; then
  python=${PYTHON:-$repo/.venv/bin/python}; [ -x "$python" ] || python=python3
  export PYTHONPATH=$repo/src${PYTHONPATH:+:$PYTHONPATH}
  # one thread per process: on a small shared CPU machine OpenMP threads spinning against other work made tiny
  # steps take seconds
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  gpus=0
else
  # the GPU machine has torch and the scientific stack but no kedro, mlflow, nibabel, omegaconf, optuna, submitit
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$repo"/.whl/*.whl 2>&1 \
    | grep -v WARNING || true
  export PYTHONPATH=/tmp/site:$repo/src PATH=/tmp/site/bin:$PATH
  python=python3
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  gpus=$("$python" -c "import torch; print(torch.cuda.device_count())")
  [ "$gpus" -ge 1 ] || { echo "no GPU visible"; exit 1; }
fi
parallel=$(( gpus >= 2 ? 2 : 1 ))
export MLFLOW_TRACKING_URI=sqlite:///$work/mlflow.db MLFLOW_ARTIFACT_LOCATION=$work/mlartifacts
"$python" -c "import torch, kedro, mlflow, optuna, submitit; print('torch', torch.__version__, '| kedro', kedro.__version__,
'| mlflow', mlflow.__version__, '| optuna', optuna.__version__, '| submitit', submitit.__version__)" || exit 1
echo "mode: $([ "$smoke" = 1 ] && echo 'CPU smoke' || echo GPU), GPUs used: $gpus, runs at once: $parallel, work: $work"

# ---- the scratch project: the checkout's conf/base, this check's settings in its conf/local -------------------
project=$work/project
mkdir -p "$project/src" "$project/conf/local"
cp -r "$repo/conf/base" "$project/conf/"
cp "$repo/conf/logging.yml" "$repo/pyproject.toml" "$project/"
[ -f "$repo/.telemetry" ] && cp "$repo/.telemetry" "$project/"
steps=${CAMPAIGN_GPU_STEPS:-60}
if [ "$smoke" = 1 ]; then
  steps=${CAMPAIGN_GPU_STEPS:-12}
  cat > "$project/conf/local/parameters_synthetic.yml" <<EOF
synthetic:
  profile: demo          # 16 cases of 96 x 112 x 24 voxels
EOF
  image_size=32 batch=4
  cat > "$project/conf/local/parameters_training.yml" <<EOF
training:                # the base variants: the tiny CPU MedSegDiff
  device: cpu
EOF
else
  cat > "$project/conf/local/parameters_synthetic.yml" <<EOF
synthetic:
  profile: campaign_gpu
  profiles:
    campaign_gpu:        # the realistic profile's head at half its in-plane resolution, 4 mm slices
      n_cases: ${CAMPAIGN_GPU_CASES:-10}
      shape_x: 256
      shape_y: [256, 316]
      n_slices: [32, 50]
      spacing_xy_mm: [0.80, 0.90]
      slice_mm: [4.0, 4.0]
      field_spacing_mm: 2.0
EOF
  image_size=256 batch=16
  # the isles24 recipe (16c MedSegDiff, mse_x0_aux1_t2, AdamW 5e-4, ddim10_x0_inscale03, bf16) as the runs' defaults
  sed -n '/^training:/,/^$/p' "$repo/conf/isles24/parameters_training.yml" | grep -v '^$' \
    > "$project/conf/local/parameters_training.yml"
fi
cat >> "$project/conf/local/parameters_training.yml" <<EOF
  max_steps: $steps
  batch_size: $batch
  val_interval: $(( steps / 2 ))
  checkpoint_interval: $(( steps / 2 ))
  log_interval: $(( steps >= 100 ? 25 : (steps >= 40 ? 10 : 3) ))
  fast_path: false
EOF
cat > "$project/conf/local/parameters_slicing.yml" <<EOF
slicing:
  image_size: $image_size
EOF
cat > "$project/conf/local/parameters_evaluation.yml" <<EOF
evaluation:
  members: 1
  fast_path: false
  threshold:
    mode: fixed
    value: 0.5
EOF
echo "run settings (conf/local of the scratch project):"; sed 's/^/  /' "$project/conf/local/parameters_training.yml"
cd "$project" || exit 1

# ---- every command timed, its log kept; the whole check within the deadline ---------------------------------
summary=$work/logs/wall_times.txt
step() {  # step NAME COMMAND...: run, time, keep the log; on failure show the log's end
  local name=$1; shift
  local left=$(( deadline_s - ($(date +%s) - started) ))
  if [ "$left" -le 10 ]; then echo "SKIPPED $name: deadline (${deadline_s} s) reached" | tee -a "$summary"; return 1; fi
  local t0; t0=$(date +%s.%N)
  timeout -k 15 "$left" "$@" > "$work/logs/$name.log" 2>&1
  local rc=$?
  printf "%-26s %7.1f s  rc=%d%s\n" "$name" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" "$rc" \
    "$([ $rc -eq 124 ] && echo ' (deadline)')" | tee -a "$summary"
  [ $rc -eq 0 ] || { echo "--- end of $name.log:"; tail -25 "$work/logs/$name.log"; }
  return $rc
}
pack() {
  cd "$work" || return
  mkdir -p pack/reports
  cp -r logs pack/
  for campaign in project/data/08_reporting/campaign_*; do
    [ -d "$campaign" ] && cp -r "$campaign" pack/reports/
  done
  for run in project/data/08_reporting/*; do  # each run's own evaluation: tables and report, not its figures
    case $(basename "$run") in campaign_*) continue ;; esac
    [ -d "$run" ] || continue
    mkdir -p "pack/reports/runs/$(basename "$run")"
    cp "$run"/*.md "$run"/*.json "$run"/*.csv "pack/reports/runs/$(basename "$run")/" 2>/dev/null
  done
  find pack -name '*.pkl' -delete  # submitit's pickled jobs and results: large, and not readable elsewhere
  tar czf "$out/campaign_gpu.tgz" -C pack .
  echo "packed $(du -h "$out/campaign_gpu.tgz" | cut -f1) into $out/campaign_gpu.tgz; total wall $(( $(date +%s) - started )) s"
}
trap pack EXIT

grid_params="training.optimizer=adamw_5e4lr_wd00|adamw_1e4lr_wd00"
step synthetic "$python" -m kedro run --pipelines synthetic || exit 1
step data_processing "$python" -m kedro run --pipelines data_processing || exit 1
grep -h "Slice store:" "$work/logs/data_processing.log" | sed 's/.*INFO /  /'
step campaign_grid "$python" -m isles_diffseg.campaign grid --name gpu_grid --params "$grid_params" --folds 0 \
  --executor local --gpus "$gpus" --parallel "$parallel" --time 30
step campaign_optuna "$python" -m isles_diffseg.campaign optuna --name gpu_study \
  --space conf/base/search_spaces/lr_loss_short.yml --trials 2 --workers "$parallel" \
  --executor local --gpus "$gpus" --parallel "$parallel" --time 30
# the reports again, from what the campaigns left: what `report` costs on its own
step report_grid "$python" -m isles_diffseg.campaign report --name gpu_grid
step report_optuna "$python" -m isles_diffseg.campaign report --name gpu_study

# ---- what the runs did (from their logs) and what MLflow holds ------------------------------------------------
echo "== training and evaluation per run (job logs; each study worker's log holds its trials)"
for log in data/08_reporting/campaign_*/submitit/*/*_log.out; do
  [ -f "$log" ] || continue
  echo "  ${log#data/08_reporting/}"
  # Kedro's rich console wraps and pads its lines: squeeze the padding, keep the start of each line
  grep -hE "Step $steps/$steps|validation:|pruned at step|Predicted [0-9]+ cases|Scored|Pipeline execution|Error" "$log" \
    | sed -E 's/ {2,}/ /g; s/^\[[0-9/]+ ([0-9:]+)\]/\1/' | cut -c1-180 | sed 's/^/    /'
done
echo "== MLflow ($MLFLOW_TRACKING_URI)"
"$python" - "$out/mlflow_summary.json" <<'PY'
import json, re, sys
from mlflow.tracking import MlflowClient

client = MlflowClient()
experiment = client.get_experiment_by_name("isles_diffseg")
runs = client.search_runs([experiment.experiment_id], max_results=1000)
by_parent = {}
for run in runs:
    by_parent.setdefault(run.data.tags.get("mlflow.parentRunId"), []).append(run)
KEY = re.compile(r"^(best_val_dice_3d|val_dice_3d|train_loss|train_images_per_s|test_threshold"
                 r"|test_model_(dice|lesion_f1|abs_volume_diff_ml)_mean|campaign_\w+_(dice|lesion_f1)_mean)$")


def artifacts(run_id, path=None, depth=0):
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifacts(run_id, item.path, depth + 1) if item.is_dir and depth < 2 else [item.path]
    return found


def describe(run, indent):
    metrics = {k: round(v, 4) for k, v in sorted(run.data.metrics.items()) if KEY.match(k)}
    files = artifacts(run.info.run_id)
    shown = ", ".join(files[:12]) + (f", ... ({len(files)} in all)" if len(files) > 12 else "")
    print(f"{indent}{run.info.run_name} [{run.info.status}] {len(run.data.metrics)} metrics, "
          f"{len(run.data.params)} params, {len(files)} artifacts")
    if metrics:
        print(f"{indent}  key metrics: {metrics}")
    if files:
        print(f"{indent}  artifacts: {shown}")
    return {"name": run.info.run_name, "status": run.info.status, "run_id": run.info.run_id,
            "tags": {k: v for k, v in run.data.tags.items() if k.startswith("isles_diffseg")},
            "metrics": run.data.metrics, "n_params": len(run.data.params), "artifacts": files,
            "children": [describe(child, indent + "    ") for child in
                         sorted(by_parent.get(run.info.run_id, []), key=lambda r: r.info.run_name or "")]}


parents = [r for r in runs if r.data.tags.get("isles_diffseg_campaign_role") == "parent"]
others = [r for r in runs if r.data.tags.get("mlflow.parentRunId") is None and r not in parents]
print(f"{len(runs)} runs in experiment isles_diffseg: {len(parents)} campaign parents, "
      f"{len(others)} other top-level runs ({', '.join(sorted(r.info.run_name or '?' for r in others))})")
tree = [describe(parent, "  ") for parent in sorted(parents, key=lambda r: r.info.run_name)]
json.dump({"n_runs": len(runs), "campaigns": tree}, open(sys.argv[1], "w"), indent=1, default=str)
PY
echo "== reports"
for campaign in data/08_reporting/campaign_*; do
  echo "$campaign: $(cd "$campaign" && find . -path ./submitit -prune -o -type f -print | sort | tr '\n' ' ')"
  sed -n '1,60p' "$campaign/campaign_report.md" 2>/dev/null | sed 's/^/  /'
done
echo "== wall times"; cat "$summary"
