#!/usr/bin/env bash
# bench/overhead.sh [LIBRARY CONCEPT] [more bench_add arguments, e.g. --steps 50 --threads 1 --runs 3]:
# the engine's time outside ONNX Runtime during Add (goal: under 5 %).
# The measuring itself is the engine's own example, onnx/examples/bench_add.rs
# (total vs time inside ONNX Runtime's run vs session creation, from the
# engine's AddStats, on a 512x384 scene with a 128x128 selection); this script
# only runs it with pie's environment, once on the given concept (the real
# UNet) and once on its synthetic bundle (a few-node denoiser: the worst case
# for the overhead's share), so that there is one implementation of it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f onnx/examples/bench_add.rs ]; then
  echo "bench/overhead.sh: onnx/examples/bench_add.rs is not there (yet); no figure" >&2
  exit 0
fi
real=()
if [ $# -ge 2 ] && [ "${1#-}" = "$1" ]; then
  real=(--library "$1" --concept "$2"); shift 2
fi
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash build/onnxruntime.sh cpu)}
export ORT_DYLIB_PATH
echo "# $(date -u '+%Y-%m-%d %H:%M UTC');$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ${#real[@]} -gt 0 ]; then
  echo "## the trained UNet: cargo run --release -p pie-engine --example bench_add -- ${real[*]} $*"
  nice cargo run --release -q -p pie-engine --example bench_add -- "${real[@]}" "$@"
fi
echo "## the synthetic bundle: cargo run --release -p pie-engine --example bench_add -- $*"
nice cargo run --release -q -p pie-engine --example bench_add -- "$@"
