#!/usr/bin/env bash
# bench/sd_gpu/run.sh PARTS KIT OUT: the GPU benchmark of the sd backbone (bench/sd_gpu/README.md),
# run on the GPU machine from the repository root.
#   PARTS  folder holding the ONNX Runtime CUDA parts (build/gpu-transfer.sh) and SHA256SUMS
#   KIT    target/gpu-sd as bench/sd_gpu/prepare.sh made it (bin/, wheels/)
#   OUT    where results go (pie.json, diffusers.json, report.md, logs)
# Knobs (environment): ARCH=sd15 (or tiny: the trainer's tiny model, to try this on a CPU),
#   DEVICE=cuda (or cpu), SIZE=512, STEPS=50, GUIDANCE=7.5, RUNS=5, VARIANTS=eager,compiled,
#   SUBJECT=0 (1: also learn a subject and time Add with it; the UNet loop costs the same, so the
#   default saves the GPU minutes of a second training and export).
# With ORT_DYLIB_PATH already set, PARTS is not unpacked; wheels are installed only when
# diffusers or jsonschema is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
parts=${1:?usage: run.sh PARTS KIT OUT} kit=${2:?usage: run.sh PARTS KIT OUT} out=${3:?usage: run.sh PARTS KIT OUT}
ARCH=${ARCH:-sd15} DEVICE=${DEVICE:-cuda} SIZE=${SIZE:-512} STEPS=${STEPS:-50} GUIDANCE=${GUIDANCE:-7.5}
RUNS=${RUNS:-5} VARIANTS=${VARIANTS:-eager,compiled} SUBJECT=${SUBJECT:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${WORK:-/tmp/pie-sd-bench}
mkdir -p "$work"
stamp() { printf '[%5ds] %s\n' "$SECONDS" "$*"; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  stamp "unpacking the ONNX Runtime CUDA libraries"
  read -r ort_version <build/ort-version
  [ -f "/tmp/ort-cuda/libonnxruntime.so.$ort_version" ] || bash build/gpu-unpack.sh "$parts" /tmp/ort-cuda >/dev/null
  export ORT_DYLIB_PATH=/tmp/ort-cuda/libonnxruntime.so.$ort_version
fi
PY=${PY:-$(command -v python3)}
if ! "$PY" -c "import diffusers, jsonschema" 2>/dev/null; then
  stamp "installing the carried wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pie-site "$kit"/wheels/*.whl
  export PYTHONPATH=/tmp/pie-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}
export PIE_TRAINER_PYTHON=$PY PIE_TRAINER_PATH=$PWD/trainer PIE_HOME=$work/lib
pie=$kit/bin/pie bench=$kit/bin/bench_sd
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"; } | tee "$out/machine.txt"
"$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$out/machine.txt"
"$pie" doctor 2>&1 | tee -a "$out/machine.txt"   # one file: the device tool returns at most 8

stamp "building the random $ARCH checkpoint"
ckpt=$work/base-$ARCH
if [ ! -f "$ckpt/model_index.json" ]; then
  if [ "$ARCH" = tiny ]; then "$PY" -m pie_trainer.sd.tiny "$ckpt" >/dev/null
  else "$PY" bench/sd_gpu/checkpoint.py "$ckpt" >/dev/null; fi
fi
"$PY" bench/sd_gpu/inputs.py "$work" --size "$SIZE"

# One training step per stage: the point is a real bundle of this architecture, exported
# by the trainer (fp16 on CUDA), not a trained model: speed does not depend on the weights.
precision=$([ "$DEVICE" = cuda ] && echo fp16 || echo fp32)
common=(--backbone sd --base "$ckpt" --steps 1 --device "$DEVICE" --export-precision "$precision" --force
        --trainer-arg=--resolution --trainer-arg="$SIZE" --trainer-arg=--batch --trainer-arg=1)
concept=$([ "$SUBJECT" = 1 ] && echo bench-sd || echo bench-sd-scene)
if [ -f "$work/lib/$concept/bundle.json" ]; then
  stamp "re-using the bundle in $work/lib (a run before this one made it)"
else
  stamp "Stage I (1 step) and export, $precision"
  "$pie" learn-scene "$work/scene.png" --name bench-sd-scene "${common[@]}" > "$out/learn-scene.log" 2>&1 \
    || { tail -30 "$out/learn-scene.log"; exit 1; }
  [ "$SUBJECT" != 1 ] || stamp "Stage II (1 step) and export, $precision"
  [ "$SUBJECT" != 1 ] || "$pie" learn-subject "$work/subject.png" --scene bench-sd-scene --name bench-sd "${common[@]}" \
    > "$out/learn-subject.log" 2>&1 || { tail -30 "$out/learn-subject.log"; exit 1; }
fi

stamp "pie add once through the command line (the user's path)"
"$pie" add "$work/scene.png" --concept "$concept" --selection "$work/selection.png" --device "$DEVICE" \
  --steps "$STEPS" --guidance "$GUIDANCE" --strength 1 --seed 0 --out "$out/pie-add.png"

stamp "pie engine: session creation and seconds per image"
"$bench" --library "$work/lib" --concept "$concept" --image "$work/scene.png" --selection "$work/selection.png" \
  --device "$DEVICE" --steps "$STEPS" --guidance "$GUIDANCE" --runs "$RUNS" --json > "$out/pie.json"
if [ "$DEVICE" = cuda ]; then   # the opt-in CUDA graph capture of the UNet, as its own row
  "$bench" --library "$work/lib" --concept "$concept" --image "$work/scene.png" --selection "$work/selection.png" \
    --device "$DEVICE" --steps "$STEPS" --guidance "$GUIDANCE" --runs "$RUNS" --json --cuda-graph >> "$out/pie.json" \
    || echo "bench_sd --cuda-graph failed (the row is left out)"
fi
cat "$out/pie.json"

stamp "diffusers' own loop ($VARIANTS)"
: > "$out/diffusers.json"; : > "$out/diffusers.log"
# One process per variant, each appending its row: a compilation that runs out of
# time still leaves the eager figures.
for variant in ${VARIANTS//,/ }; do
  "$PY" bench/sd_gpu/diffusers_loop.py "$ckpt" --size "$SIZE" --steps "$STEPS" --guidance "$GUIDANCE" --runs "$RUNS" \
    --variants "$variant" --device "$DEVICE" >> "$out/diffusers.json" 2>> "$out/diffusers.log" \
    || { tail -30 "$out/diffusers.log"; exit 1; }
done
cat "$out/diffusers.json"

"$PY" bench/sd_gpu/report.py "$out/machine.txt" "$out/pie.json" "$out/diffusers.json" | tee "$out/report.md"
stamp "done"
