#!/usr/bin/env bash
# bench/sd_gpu/run.sh PARTS KIT OUT: the GPU benchmark of the sd backbone (bench/sd_gpu/README.md),
# run on the GPU machine from the repository root.
#   PARTS  folder holding the ONNX Runtime CUDA parts (build/gpu-transfer.sh) and SHA256SUMS
#   KIT    target/gpu-sd as bench/sd_gpu/prepare.sh made it (bin/, wheels/)
#   OUT    where results go (pie.json, diffusers.json, memory.json, match.json, report.md, logs)
# Knobs (environment): ARCH=sd15 (or sdxl: SDXL's shapes, the sdxl backbone, 1024 px and 30 steps by
#   default; tiny or tiny-xl: the trainer's tiny sd / sdxl models, to try this on a CPU),
#   DEVICE=cuda (or cpu), SIZE=512, STEPS=50, GUIDANCE=7.5, RUNS=5,
#   GRAPHS=plain,fused (the sd bundles pie is timed with: the graphs as exported, and fused for
#   CUDA by --optimize on; on a CPU the fused one is exported and validated only),
#   PIE=1 (0: no pie rows, e.g. a later call for diffusers alone),
#   VARIANTS=eager,compiled (diffusers' loop; empty: none),
#   SUBJECT=0 (1: also learn a subject and time Add with it; the UNet loop costs the same, so the
#   default saves the GPU minutes of a second training and export).
# Results of earlier calls on the same warm machine stay in $WORK/results and are reported too.
# With ORT_DYLIB_PATH already set, PARTS is not unpacked; wheels are installed only when
# diffusers or jsonschema is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
parts=${1:?usage: run.sh PARTS KIT OUT} kit=${2:?usage: run.sh PARTS KIT OUT} out=${3:?usage: run.sh PARTS KIT OUT}
ARCH=${ARCH:-sd15}
case "$ARCH" in
  sdxl|tiny-xl) BACKBONE=sdxl; xl_default() { echo "$1"; } ;;
  sd15|tiny) BACKBONE=sd; xl_default() { echo "$2"; } ;;
  *) echo "ARCH must be sd15, sdxl, tiny or tiny-xl" >&2; exit 2 ;;
esac
DEVICE=${DEVICE:-cuda} SIZE=${SIZE:-$(xl_default 1024 512)} STEPS=${STEPS:-$(xl_default 30 50)} GUIDANCE=${GUIDANCE:-7.5}
RUNS=${RUNS:-5} VARIANTS=${VARIANTS-eager,compiled} SUBJECT=${SUBJECT:-0} GRAPHS=${GRAPHS:-plain,fused} PIE=${PIE:-1}
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
  case "$ARCH" in
    tiny) "$PY" -m pie_trainer.sd.tiny "$ckpt" >/dev/null ;;
    tiny-xl) "$PY" -m pie_trainer.sdxl.tiny "$ckpt" >/dev/null ;;
    *) "$PY" bench/sd_gpu/checkpoint.py "$ckpt" --arch "$ARCH" >/dev/null ;;
  esac
fi
"$PY" bench/sd_gpu/inputs.py "$work" --size "$SIZE"

# One training step per stage: the point is a real bundle of this architecture, exported
# by the trainer (fp16 on CUDA), not a trained model: speed does not depend on the weights.
# No preview.png: drawing it is not timed, and on the GPU image's CPU-only ONNX Runtime it costs
# a minute of the call.
precision=$([ "$DEVICE" = cuda ] && echo fp16 || echo fp32)
common=(--backbone "$BACKBONE" --base "$ckpt" --steps 1 --device "$DEVICE" --force
        --trainer-arg=--resolution --trainer-arg="$SIZE" --trainer-arg=--batch --trainer-arg=1
        --trainer-arg=--preview-steps --trainer-arg=0)
results=$work/results-$ARCH   # every call's rows of this ARCH on this (warm) machine: each report shows all of them
mkdir -p "$results"
# plain: the graphs as exported (--optimize off); fused: ONNX Runtime's transformer optimizer
# (--optimize on, always float16: its fused operators run on CUDA only).
concept_of() { local p=${1/plain/}; echo "bench-$ARCH${p:+-$p}$([ "$SUBJECT" = 1 ] || echo -scene)"; }
scene_of() { local p=${1/plain/}; echo "bench-$ARCH${p:+-$p}-scene"; }
learn() {
  local g=$1 opt=off prec=$precision
  [ "$g" = plain ] || { opt=on; prec=fp16; }
  if [ -f "$work/lib/$(concept_of "$g")/bundle.json" ]; then
    stamp "re-using the $g bundle in $work/lib (a run before this one made it)"; return
  fi
  stamp "Stage I (1 step) and export, $prec, --optimize $opt"
  "$pie" learn-scene "$work/scene.png" --name "$(scene_of "$g")" "${common[@]}" --export-precision "$prec" \
    --optimize "$opt" > "$out/learn-scene-$g.log" 2>&1 || { tail -30 "$out/learn-scene-$g.log"; exit 1; }
  [ "$SUBJECT" != 1 ] || stamp "Stage II (1 step) and export, $prec, --optimize $opt"
  [ "$SUBJECT" != 1 ] || "$pie" learn-subject "$work/subject.png" --scene "$(scene_of "$g")" --name "$(concept_of "$g")" \
    "${common[@]}" --export-precision "$prec" --optimize "$opt" > "$out/learn-subject-$g.log" 2>&1 \
    || { tail -30 "$out/learn-subject-$g.log"; exit 1; }
  grep -h "fused\|interface only" "$out/learn-scene-$g.log" | tail -8 || true
}
timed() {   # timed LABEL -- COMMAND...: the command, with its peak GPU memory into memory.json
  local label=$1; shift 2
  "$PY" bench/sd_gpu/peak_memory.py --label "$label" --out "$results/memory.json" -- "$@"
}

if [ "$PIE" = 1 ]; then
  for g in ${GRAPHS//,/ }; do learn "$g"; done
  : > "$results/pie.json"
  for g in ${GRAPHS//,/ }; do
    concept=$(concept_of "$g") label=pie${g/plain/}; label=${label/piefused/pie-fused}
    "$pie" concepts show "$concept" | tee "$out/concept-$g.txt"
    if [ "$g" != plain ] && [ "$DEVICE" != cuda ]; then
      stamp "$g: exported and validated; its fused operators run on CUDA only, so it is not timed here"; continue
    fi
    stamp "pie add once through the command line (the user's path), $g graphs"
    "$pie" add "$work/scene.png" --concept "$concept" --selection "$work/selection.png" --device "$DEVICE" \
      --steps "$STEPS" --guidance "$GUIDANCE" --strength 1 --seed 0 --out "$out/pie-add-$g.png"
    stamp "pie engine, $g graphs: session creation and seconds per image"
    bench_args=(--library "$work/lib" --concept "$concept" --image "$work/scene.png" --selection "$work/selection.png"
                --device "$DEVICE" --steps "$STEPS" --guidance "$GUIDANCE" --runs "$RUNS" --json)
    timed "$label" -- "$bench" "${bench_args[@]}" >> "$results/pie.json"
    if [ "$DEVICE" = cuda ]; then   # the opt-in CUDA graph capture of the UNet, as its own row
      timed "$label-cuda-graph" -- "$bench" "${bench_args[@]}" --cuda-graph >> "$results/pie.json" \
        || echo "bench_sd --cuda-graph failed for the $g graphs (the row is left out)"
    fi
  done
  cat "$results/pie.json"
  # Same seed, same weights: the fused graphs' image against the plain ones' (float16 both).
  if [ -f "$out/pie-add-plain.png" ] && [ -f "$out/pie-add-fused.png" ]; then
    "$PY" bench/sd_gpu/report.py --match "$out/pie-add-plain.png" "$out/pie-add-fused.png" > "$results/match.json"
  fi
fi

if [ -n "$VARIANTS" ]; then
  stamp "diffusers' own loop ($VARIANTS)"
  : > "$results/diffusers.json"; : > "$out/diffusers.log"
  # One process per variant, each appending its row: a compilation that runs out of
  # time still leaves the eager figures.
  for variant in ${VARIANTS//,/ }; do
    timed "diffusers-$variant" -- "$PY" bench/sd_gpu/diffusers_loop.py "$ckpt" --size "$SIZE" --steps "$STEPS" \
      --guidance "$GUIDANCE" --runs "$RUNS" --variants "$variant" --device "$DEVICE" >> "$results/diffusers.json" \
      2>> "$out/diffusers.log" || { tail -30 "$out/diffusers.log"; exit 1; }
  done
  cat "$results/diffusers.json"
fi

cp "$results"/*.json "$out/" 2>/dev/null || true
"$PY" bench/sd_gpu/report.py "$out/machine.txt" "$results" "$BACKBONE" | tee "$out/report.md"
stamp "done"
