#!/usr/bin/env bash
# On the GPU machine: joins the parts that build/gpu-transfer.sh made (all in
# folder $1), checks them and unpacks the CUDA build of ONNX Runtime into $2.
set -euo pipefail
src=$1 dest=$2
(cd "$src" && sha256sum -c --quiet SHA256SUMS)
mkdir -p "$dest"
cat "$src"/part.* | xz -d | tar -C "$dest" -xf -
ls -la "$dest"
