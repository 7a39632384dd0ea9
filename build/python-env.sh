#!/usr/bin/env bash
# build/python-env.sh PREFIX REQUIREMENTS [DISK_MB] [IMPORTS]: a venv with exactly REQUIREMENTS
# installed from PyPI, at $PIE_CACHE/PREFIX-<hash of the requirements file>,
# so that changing the requirements makes a new one; IMPORTS (e.g. "torch, PIL")
# must import before it counts as complete. Prints its python.
source "$(dirname "$0")/common.sh"
prefix=${1:?usage: python-env.sh PREFIX REQUIREMENTS}
req=${2:?usage: python-env.sh PREFIX REQUIREMENTS}
[ -f "$req" ] || die "no requirements file $req"
lock "$prefix"
key=$(sha256sum "$req" | cut -c1-12)
venv=$PIE_CACHE/$prefix-$key
if [ -f "$venv/.complete" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"; exit 0
fi

command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "pie needs Python 3.10 or newer, found $(python3 --version)"
python3 -c 'import ensurepip, venv' 2>/dev/null || die "Python's venv module is missing: apt-get install python3-venv"
mb=${3:-500}
need_disk "$mb" "the Python environment $prefix (from $(basename "$req"))"

rm -rf "$venv.partial"
run_step "creating the venv (python3 -m venv)" python3 -m venv "$venv.partial"
# Built under its .partial name and renamed when complete: nothing may rely on
# the venv's own path, so everything in it is run as `python -m ...`.
py=$venv.partial/bin/python
export PIP_CACHE_DIR=$PIE_CACHE/pip PIP_DISABLE_PIP_VERSION_CHECK=1
log "installing $(grep -cv '^\s*\(#\|$\)' "$req") packages of $req from PyPI"
run_step "pip install -r $req" "$py" -m pip install -q -r "$req"
check=${4:-}
[ -z "$check" ] || run_step "importing $check in the new venv" "$py" -c "import $check"
touch "$venv.partial/.complete"
rm -rf "$venv"
mv "$venv.partial" "$venv"
for old in "$PIE_CACHE/$prefix"-*; do   # environments of older requirement sets
  case "$old" in "$venv"|*.partial) ;; *) log "removing stale $old"; rm -rf "$old" ;; esac
done
log "Python environment ready: $venv"
echo "$venv/bin/python"
