#!/usr/bin/env bash
# bench/overhead.sh LIBRARY CONCEPT IMAGE SELECTION [more bench_add arguments]:
# the engine's time outside ONNX Runtime during Add (goal: under 5 %).
# The measuring itself is the engine's own example, onnx/examples/bench_add.rs
# (it reads the engine's AddStats: total vs time inside ONNX Runtime's run);
# this script only builds and runs it with pie's environment, so that there is
# one implementation of that measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=${1:?usage: bench/overhead.sh LIBRARY CONCEPT IMAGE SELECTION}
concept=${2:?concept}
image=${3:?image}
selection=${4:?selection}
shift 4
if [ ! -f onnx/examples/bench_add.rs ]; then
  echo "bench/overhead.sh: onnx/examples/bench_add.rs is not there (yet); no figure" >&2
  exit 0
fi
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash build/onnxruntime.sh cpu)}
export ORT_DYLIB_PATH
nice cargo build --release -q -p pie-engine --example bench_add
exe=target/release/examples/bench_add
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $exe --library $lib --concept $concept --image $image --selection $selection $*"
"$exe" --library "$lib" --concept "$concept" --image "$image" --selection "$selection" "$@"
