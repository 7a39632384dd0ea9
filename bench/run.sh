#!/usr/bin/env bash
# bench/run.sh: every benchmark, one after the other, on one pair (bench/README.md).
#   PRESETS=quick,default  which training presets train_time.py runs (default: quick,default);
#                          the last one's concepts are what the Add benchmarks use
#   BENCH_DIR=/tmp/pie-bench  where the library, inputs and JSON results go
#   REPEAT=3               repeats of each Add measurement
# Prints figures only; nothing here asserts on time. Heavy steps run under nice.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESETS=${PRESETS:-quick,default}
BENCH_DIR=${BENCH_DIR:-/tmp/pie-bench}
REPEAT=${REPEAT:-3}
last=${PRESETS##*,}
mkdir -p "$BENCH_DIR"
PY=$(bash build/python-env.sh eval-venv tests/eval/requirements.txt 800 "cv2, skimage, numpy, PIL")
TP=$(bash build/trainer-env.sh)
ORT_DYLIB_PATH=$(bash build/onnxruntime.sh cpu)
export ORT_DYLIB_PATH PIE_TRAINER_PYTHON=$TP PIE_TRAINER_PATH=$PWD/trainer
[ -x target/release/pie ] || nice cargo build --release -p pie-engine

echo "==== Stage I / Stage II / Add: wall time and peak memory ($PRESETS)"
nice "$PY" bench/train_time.py --presets "$PRESETS" --library "$BENCH_DIR/lib" --work "$BENCH_DIR/work" \
  --out "$BENCH_DIR/train_time.json"

echo; echo "==== Add: engine (ONNX Runtime) vs PyTorch, same bundle, steps, seed and region"
PYTHONPATH=trainer "$TP" bench/add_vs_torch.py --library "$BENCH_DIR/lib" --concept "bench-subject-$last" \
  --image "$BENCH_DIR/work/scene.png" --selection "$BENCH_DIR/work/selection.png" --repeat "$REPEAT" \
  --out "$BENCH_DIR/add_vs_torch.json"

echo; echo "==== Add: time vs selection area and vs image size"
"$PY" bench/add_scaling.py --library "$BENCH_DIR/lib" --concept "bench-subject-$last" \
  --image "$BENCH_DIR/work/scene.png" --repeat "$REPEAT" --out "$BENCH_DIR/add_scaling.json"

echo; echo "==== Add: the engine's overhead outside ONNX Runtime"
bash bench/overhead.sh "$BENCH_DIR/lib" "bench-subject-$last" --runs "$REPEAT" --threads 1
