#!/usr/bin/env bash
# The trainer's Python environment: a venv with PyTorch and the trainer's
# dependencies, at $PIE_CACHE/venv-<hash of trainer/requirements.txt>.
# The trainer itself is not installed into it (tests run the clone's code via
# PYTHONPATH; install.sh installs a copy for users). Prints the venv's python.
source "$(dirname "$0")/common.sh"

lock trainer-env
req=$PIE_ROOT/trainer/requirements.txt
key=$(sha256sum "$req" | cut -c1-12)
venv=$PIE_CACHE/venv-$key
if [ -f "$venv/.complete" ] && "$venv/bin/python" -c 'import torch, onnx' >/dev/null 2>&1; then
  echo "$venv/bin/python"; exit 0
fi

command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "the trainer needs Python 3.10 or newer, found $(python3 --version)"
need_disk 7000 "the trainer environment (PyTorch from PyPI, about 5.5 GB)"

rm -rf "$venv.partial"
run_step "creating the venv (python3 -m venv)" python3 -m venv "$venv.partial"
# The venv is built under its .partial name and then renamed: nothing in it may
# record its own path, so everything is run as `python -m ...`.
py=$venv.partial/bin/python
export PIP_CACHE_DIR=$PIE_CACHE/pip PIP_DISABLE_PIP_VERSION_CHECK=1
log "installing the trainer's dependencies from PyPI (PyTorch is about 3 GB the first time)"
run_step "pip install -r trainer/requirements.txt" "$py" -m pip install -q -r "$req"
run_step "importing torch in the new venv" "$py" -c 'import torch, onnx, onnxruntime, numpy, PIL'
touch "$venv.partial/.complete"
rm -rf "$venv"
mv "$venv.partial" "$venv"
# Older venvs of other requirement sets are dead weight.
for old in "$PIE_CACHE"/venv-*; do
  [ "$old" = "$venv" ] || { log "removing stale $old"; rm -rf "$old"; }
done
log "trainer environment ready: $venv"
echo "$venv/bin/python"
