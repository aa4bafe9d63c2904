#!/usr/bin/env bash
# Time and peak memory of the data pipelines on the `realistic` synthetic profile (10 cases of
# 512 x 512..633 x 64..101 voxels), in a scratch copy of the project so data/ is left alone.
#   bash benchmarks/ingestion_realistic.sh [scratch_dir]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
scratch=${1:-$(mktemp -d)}
mkdir -p "$scratch/src" "$scratch/conf/local"
cp -r "$here/conf/base" "$scratch/conf/"
cp "$here/conf/logging.yml" "$here/pyproject.toml" "$here/.telemetry" "$scratch/"
export KEDRO_DISABLE_TELEMETRY=1 MLFLOW_TRACKING_URI="sqlite:///$scratch/mlflow.db"
kedro=${KEDRO:-$here/.venv/bin/kedro}
cd "$scratch"
echo "== synthetic (realistic profile)"
/usr/bin/time -f "synthetic: %e s wall, %M KiB peak RSS" "$kedro" run --pipelines synthetic \
  --params synthetic.profile=realistic >synthetic.log 2>&1 || { tail -20 synthetic.log; exit 1; }
tail -1 synthetic.log
echo "== ingestion + slicing (256 px) + splits"
/usr/bin/time -f "data_processing: %e s wall, %M KiB peak RSS" "$kedro" run --pipelines data_processing \
  --params slicing.image_size=256 >processing.log 2>&1 || { tail -20 processing.log; exit 1; }
tail -1 processing.log
python3 - <<'PY'
import csv
rows = list(csv.DictReader(open("data/03_primary/case_manifest.csv")))
secs = [float(r["seconds"]) for r in rows if r["status"] == "ok"]
print(f"ingestion per case: mean {sum(secs)/len(secs):.1f} s, max {max(secs):.1f} s over {len(secs)} cases "
      f"(shapes {sorted({r['native_shape'] for r in rows})[:3]}...)")
PY
grep -E "Slice store:|Completed node: build_slice_store" processing.log | head -2
