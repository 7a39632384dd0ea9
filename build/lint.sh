#!/usr/bin/env bash
# The lint gate (a phase of tests/run.sh): rustfmt and clippy for both crates
# (the Python has no linter or type check yet). Every check runs,
# and the exit status is non-zero if any of them found something.
# PIE_SKIP_GIMP=1 leaves out the plug-in's clippy (it builds in the GIMP 3 host).
source "$(dirname "$0")/common.sh"
cd "$PIE_ROOT"

found=()
lint() { # lint NAME FIX CMD...
  local name=$1 fix=$2; shift 2
  log "$name"
  "$@" || found+=("$name (to fix: $fix)")
}

lint "rustfmt" "cargo fmt --all" cargo fmt --all --check
lint "clippy, engine" "the warnings above" \
  nice cargo clippy --locked --release -p pie-engine --all-targets -- -D warnings
if [ "${PIE_SKIP_GIMP:-0}" != 1 ]; then
  host_dir=$(host_target) || die "cannot prepare the GIMP 3 host's build folder"
  lint "clippy, plug-in (in the GIMP 3 host)" "the warnings above" \
    nice bash build/gimp-host.sh run env CARGO_TARGET_DIR="$host_dir" \
    cargo clippy --offline --release -p pie-gimp --all-targets -- -D warnings
fi

if [ ${#found[@]} -gt 0 ]; then
  printf '[pie lint] found something: %s\n' "${found[@]}" >&2
  exit 1
fi
log "all lints clean"
