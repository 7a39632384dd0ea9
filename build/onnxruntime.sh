#!/usr/bin/env bash
# Puts the ONNX Runtime shared libraries pie loads at run time into the cache:
#   $PIE_CACHE/onnxruntime/<flavour>-<version>/libonnxruntime.so.<version> (+ providers),
#   <version> from build/ort-version
# flavour: cpu (PyPI onnxruntime) or cuda (PyPI onnxruntime-gpu, the CUDA 13
# build). Default: cuda when an NVIDIA driver is present, else cpu.
# Prints the library's path on stdout.
source "$(dirname "$0")/common.sh"

lock onnxruntime
flavour=${1:-auto}
case "$flavour" in
  --cpu|cpu) flavour=cpu ;;
  --cuda|cuda) flavour=cuda ;;
  auto|--auto)
    if [ -e /proc/driver/nvidia/version ] || command -v nvidia-smi >/dev/null 2>&1; then flavour=cuda; else flavour=cpu; fi ;;
  *) die "unknown flavour '$flavour' (use cpu, cuda or auto)" ;;
esac

dest=$PIE_CACHE/onnxruntime/$flavour-$ORT_VERSION
lib=$dest/libonnxruntime.so.$ORT_VERSION
if [ -f "$dest/.complete" ] && [ -f "$lib" ]; then
  echo "$lib"; exit 0
fi

if [ "$flavour" = cuda ]; then pkg=onnxruntime-gpu; mb=800; else pkg=onnxruntime; mb=120; fi
need_disk "$mb" "ONNX Runtime ($pkg==$ORT_VERSION)"

wheels=$PIE_CACHE/wheels
mkdir -p "$wheels"
if ! ls "$wheels"/"${pkg//-/_}"-"$ORT_VERSION"-*.whl >/dev/null 2>&1; then
  log "downloading $pkg==$ORT_VERSION from PyPI"
  tmpd=$(mktemp -d "$wheels/.dl.XXXXXX")
  trap 'rm -rf "$tmpd"' EXIT
  run_step "downloading $pkg==$ORT_VERSION from PyPI" \
    python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.11 -d "$tmpd" "$pkg==$ORT_VERSION"
  mv "$tmpd"/*.whl "$wheels"/ && rmdir "$tmpd"
fi
whl=$(ls "$wheels"/"${pkg//-/_}"-"$ORT_VERSION"-*.whl | head -n1)

rm -rf "$dest.partial"
mkdir -p "$dest.partial"
extract() { # the wheel is a zip; only its libonnxruntime* files are needed
  python3 - "$1" "$2" <<'PY'
import os, shutil, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        name = os.path.basename(info.filename)
        if info.filename.startswith("onnxruntime/capi/libonnxruntime"):
            with z.open(info) as src, open(os.path.join(dest, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
}
run_step "extracting the libraries from $(basename "$whl")" extract "$whl" "$dest.partial"
[ -f "$dest.partial/libonnxruntime.so.$ORT_VERSION" ] || die "$(basename "$whl") holds no libonnxruntime.so.$ORT_VERSION"
touch "$dest.partial/.complete"
rm -rf "$dest"
mv "$dest.partial" "$dest"
log "ONNX Runtime $ORT_VERSION ($flavour) ready in $dest"
echo "$lib"
