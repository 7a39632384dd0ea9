#!/usr/bin/env bash
# CLIP's BPE vocabulary, which converting a real single-file Stable Diffusion
# checkpoint needs (its tokenizer is not in the file, and pie never downloads
# from a model hub): the merges file `bpe_simple_vocab_16e6.txt.gz` from the
# open_clip_torch wheel on PyPI, checked against its sha256, kept at
#   $PIE_CACHE/clip-bpe/bpe_simple_vocab_16e6.txt.gz
# where the trainer looks for it (trainer/pie_trainer/sd/single_file.py).
# Prints its path on stdout.
source "$(dirname "$0")/common.sh"

lock clip-vocab
PKG=open_clip_torch
PKG_VERSION=3.3.0
NAME=bpe_simple_vocab_16e6.txt.gz
SHA256=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a

dest=$PIE_CACHE/clip-bpe/$NAME
if [ -f "$dest" ] && echo "$SHA256  $dest" | sha256sum -c --status; then
  echo "$dest"; exit 0
fi
need_disk 5 "CLIP's BPE vocabulary"
wheels=$PIE_CACHE/wheels
mkdir -p "$wheels" "$(dirname "$dest")"
if ! ls "$wheels"/"$PKG"-"$PKG_VERSION"-*.whl >/dev/null 2>&1; then
  tmpd=$(mktemp -d "$wheels/.dl.XXXXXX")
  trap 'rm -rf "$tmpd"' EXIT
  run_step "downloading $PKG==$PKG_VERSION from PyPI (for CLIP's vocabulary only)" \
    python3 -m pip download --no-deps --only-binary=:all: -d "$tmpd" "$PKG==$PKG_VERSION"
  mv "$tmpd"/*.whl "$wheels"/ && rmdir "$tmpd"
fi
whl=$(ls "$wheels"/"$PKG"-"$PKG_VERSION"-*.whl | head -n1)
python3 - "$whl" "open_clip/$NAME" "$dest.partial" <<'PY'
import sys, zipfile
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
if ! echo "$SHA256  $dest.partial" | sha256sum -c --status; then
  rm -f "$dest.partial"
  die "$NAME in $(basename "$whl") does not have the expected sha256; delete $whl and run again"
fi
mv "$dest.partial" "$dest"
echo "$dest"
