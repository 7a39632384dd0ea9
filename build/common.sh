# Shared helpers for the set-up scripts. Sourced, never run.
# Every heavy artefact lives under $PIE_CACHE, outside the clone, so that a
# fresh clone (and CI) re-uses it. Each artefact is built under a ".partial"
# name and renamed only when complete, so an interrupted run never leaves
# something a later run mistakes for finished.
set -euo pipefail

PIE_CACHE=${PIE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pie}
PIE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The ONNX Runtime version is written once, in build/ort-version: the engine
# reads the same file when it is compiled (onnx/src/locations.rs).
read -r ORT_VERSION <"$PIE_ROOT/build/ort-version"
export PIE_CACHE PIE_ROOT ORT_VERSION

log()  { printf '[pie %s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die()  { printf '[pie %s] error: %s\n' "$(basename "$0" .sh)" "$*" >&2; exit 1; }

# need_disk MB WHAT: refuse to start a download that cannot fit.
need_disk() {
  mkdir -p "$PIE_CACHE"
  local free_mb
  free_mb=$(df -Pm "$PIE_CACHE" | awk 'NR==2{print $4}')
  if [ "$free_mb" -lt "$1" ]; then
    die "$2 needs about $1 MB free under $PIE_CACHE, only $free_mb MB left; free some space or set PIE_CACHE to another disk"
  fi
}

# run_step WHAT CMD...: run a command, turning a failure into a message that
# names the step (and the usual reason when a registry is out of reach).
run_step() {
  local what=$1; shift
  local out
  out=$(mktemp)
  if ! "$@" >"$out" 2>&1; then
    tail -n 25 "$out" >&2
    rm -f "$out"
    die "$what failed (command: $*). If the lines above mention a name resolution or connection error, the package registry cannot be reached from this machine."
  fi
  rm -f "$out"
}

# phase NAME CMD...: time a phase and print how long it took.
phase() {
  local name=$1; shift
  local t0=$SECONDS
  log "$name ..."
  "$@"
  log "$name done in $((SECONDS - t0)) s"
}

# lock NAME: hold an exclusive lock for the rest of the script, so that two
# set-up runs (two test runs, a test run and install.sh) never build the same
# artefact at once; the second waits, then finds it complete.
lock() {
  mkdir -p "$PIE_CACHE"
  exec {PIE_LOCK_FD}>"$PIE_CACHE/.lock-$1"
  if ! flock -n "$PIE_LOCK_FD"; then
    log "waiting for another set-up run to finish $1"
    flock "$PIE_LOCK_FD"
  fi
}

# The GIMP 3 build-and-test hosts (build/gimp-host.sh): one Debian chroot per
# GIMP minor version. gimp_host_suite HOST prints the suite for 3.0/trixie or
# 3.2/sid, gimp_host_minor HOST the GIMP minor version; gimp_minor V cuts a
# version such as 3.2.6 to 3.2.
gimp_host_suite() {
  case "$1" in 3.0|trixie) echo trixie ;; 3.2|sid) echo sid ;; *) return 1 ;; esac
}
gimp_host_minor() {
  case "$1" in 3.0|trixie) echo 3.0 ;; 3.2|sid) echo 3.2 ;; *) return 1 ;; esac
}
gimp_minor() { printf '%s\n' "$1" | cut -d. -f1,2; }

# host_target [HOST]: the GIMP 3 host's cargo build folder (one per host: each
# links its own libgimp, glibc and gexiv2, and cargo would rebuild every -sys
# crate each time the other host built there). It lives in the cache and is
# shared by every clone (each is mounted at /pie in the host), so a fresh clone
# re-uses the compiled dependencies. Cargo judges freshness by file times: after
# another clone built there, this clone's edits older than that build would pass
# for built (and the plug-in would link the other clone's engine). So when the
# last build there came from another clone, pie's own two crates are cleaned first.
host_target() {
  local host=${1:-${PIE_GIMP_VERSION:-3.0}} suite
  suite=$(gimp_host_suite "$host") || { log "unknown GIMP host '$host'"; return 1; }
  local dir=$PIE_CACHE/target-$suite
  mkdir -p "$dir"
  if [ "$(cat "$dir/.pie-clone" 2>/dev/null)" != "$PIE_ROOT" ]; then
    bash "$PIE_ROOT/build/gimp-host.sh" "$host" run env CARGO_TARGET_DIR="$dir" \
      cargo clean --offline --release -p pie-engine -p pie-gimp >&2 || return 1
    printf '%s\n' "$PIE_ROOT" >"$dir/.pie-clone"
  fi
  printf '%s\n' "$dir"
}
