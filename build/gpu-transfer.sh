#!/usr/bin/env bash
# Packs the CUDA build of ONNX Runtime for a GPU machine that is reached only
# through file transfers of under 64 MiB: the three libraries (the CUDA
# provider alone is 284 MB) are xz-compressed into one archive and split into
# parts of at most 61 MiB under target/gpu/ (ignored by git), with a
# checksum file. Unpack on the other side with build/gpu-unpack.sh.
source "$(dirname "$0")/common.sh"
lock gpu-transfer
lib=$(bash "$PIE_ROOT/build/onnxruntime.sh" cuda)
dir=$(dirname "$lib")
out=$PIE_ROOT/target/gpu
cache=$PIE_CACHE/gpu-transfer-$ORT_VERSION
if [ ! -f "$cache/.complete" ]; then
  need_disk 600 "the compressed CUDA provider"
  rm -rf "$cache.partial"; mkdir -p "$cache.partial"
  log "compressing the CUDA libraries with xz (a few minutes on 2 cores)"
  tar -C "$dir" -cf - libonnxruntime.so.$ORT_VERSION libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so \
    | nice -n 10 xz -6 -T2 > "$cache.partial/ortcuda.tar.xz"
  (cd "$cache.partial" && split -b 61M -d -a 2 ortcuda.tar.xz part. && rm ortcuda.tar.xz && sha256sum part.* > SHA256SUMS)
  touch "$cache.partial/.complete"
  rm -rf "$cache"; mv "$cache.partial" "$cache"
fi
rm -rf "$out"; mkdir -p "$out"
cp "$cache"/part.* "$cache"/SHA256SUMS "$out"/
ls "$out"
