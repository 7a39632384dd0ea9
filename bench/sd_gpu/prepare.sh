#!/usr/bin/env bash
# bench/sd_gpu/prepare.sh: builds, on this CPU machine, everything the GPU benchmark
# (bench/sd_gpu/README.md) carries to a GPU machine that has no Rust toolchain and no
# package registry:
#   target/gpu/part.NN + SHA256SUMS   the CUDA build of ONNX Runtime, xz-packed in parts
#                                     under 64 MiB (build/gpu-transfer.sh), one part per call
#   target/gpu-sd/bin/                pie and the bench_sd example, built here
#   target/gpu-sd/wheels/             the Python wheels the GPU image lacks (diffusers and
#                                     the trainer's jsonschema), for its Python 3.12
# Idempotent; the heavy parts are cached under $PIE_CACHE.
source "$(dirname "$0")/../../build/common.sh"
cd "$PIE_ROOT"
PYVER=${PYVER:-3.12}   # the GPU image's python3 (/work/.library/device/KINDS.md)

run_step "building pie and the bench_sd example (release)" \
  nice cargo build --release -p pie-engine --bin pie --example bench_sd
bash build/gpu-transfer.sh >/dev/null

kit=target/gpu-sd
rm -rf "$kit"; mkdir -p "$kit/bin" "$kit/wheels"
cp target/release/pie target/release/examples/bench_sd "$kit/bin/"
# Pinned to what the trainer is tested with here; everything else they need is in the image.
run_step "downloading wheels for Python $PYVER" \
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$kit/wheels" diffusers==0.42.1 importlib_metadata lazy-importer jsonschema jsonschema-specifications \
    referencing rpds-py
log "ready: $(du -sh target/gpu | cut -f1) of ONNX Runtime parts, $(du -sh "$kit" | cut -f1) of binaries and wheels"
ls target/gpu "$kit/bin" "$kit/wheels"
