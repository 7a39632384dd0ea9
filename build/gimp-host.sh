#!/usr/bin/env bash
# The GIMP 3 build-and-test hosts (Debian 12 ships only GIMP 2.10), one chroot
# per GIMP minor version, each with gimp, libgimp-3.0-dev and what the headless
# and dialog tests use:
#   3.0  Debian trixie (GIMP 3.0.4) at $PIE_CACHE/trixie
#   3.2  Debian sid    (GIMP 3.2.x) at $PIE_CACHE/sid
# Idempotent; an unfinished chroot is unmounted and rebuilt, never reused.
#   build/gimp-host.sh [HOST] [COMMAND]   HOST: 3.0 or trixie (default; also
#                                 $PIE_GIMP_VERSION), 3.2 or sid
#   build/gimp-host.sh [HOST]     create it if missing, print its path
#   ... run CMD...                run CMD inside, with the Rust toolchain and
#                                 the clone bind-mounted at /pie (cwd /pie)
#   ... version                   print the GIMP version inside (e.g. 3.2.6)
#   ... target                    print the host's own cargo build folder
#   ... umount                    undo every bind mount (safe to rm -rf after)
#   ... remove                    umount, then delete the chroot
source "$(dirname "$0")/common.sh"

host=${PIE_GIMP_VERSION:-3.0}
case "${1:-}" in 3.0|3.2|trixie|sid) host=$1; shift ;; esac
SUITE=$(gimp_host_suite "$host") || die "unknown GIMP host '$host' (3.0 or trixie, 3.2 or sid)"
ROOT=$PIE_CACHE/$SUITE
MIRROR=${PIE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="gimp libgimp-3.0-dev pkg-config gcc libc6-dev ca-certificates xvfb xauth xdotool imagemagick python3-gi"
# The trixie stamp is unchanged from the single-host days, so that an existing
# trixie host is kept, not rebuilt.
STAMP_TEXT="$SUITE $PACKAGES"

[ "$(id -u)" = 0 ] || die "the GIMP 3 host is a chroot and needs root (run as root, or skip the GIMP tests with PIE_SKIP_GIMP=1)"

mounts_under() { # deepest first, so nested mounts go before their parents
  awk -v r="$1" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/self/mounts | sort -r
}
umount_all() {
  local root=$1 m
  for m in $(mounts_under "$root"); do umount -l "$m" 2>/dev/null || umount -R "$m" 2>/dev/null || true; done
  if [ -n "$(mounts_under "$root")" ]; then die "could not unmount everything under $root; not deleting it"; fi
}
bind() { # bind SRC DEST (idempotent)
  mkdir -p "$2"
  mountpoint -q "$2" || mount --bind "$1" "$2"
}
mount_all() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/sys" || { mount --rbind /sys "$ROOT/sys"; mount --make-rslave "$ROOT/sys"; }
  mountpoint -q "$ROOT/dev" || { mount --rbind /dev "$ROOT/dev"; mount --make-rslave "$ROOT/dev"; }
}
# The ONNX Runtime library and the trainer's venv live under $PIE_CACHE; the
# venv's python is a link into the Python it was made with (pyenv, /usr, ...).
# Both are bound inside at the same paths, so that the absolute paths the
# set-up scripts print (and install.sh records) are valid on both sides.
# A Python under /usr or /bin is the host's system one: it cannot be bound
# over the chroot's own /usr, so such a venv is not usable inside (say so).
bind_runtime() {
  local cfg home base
  case "$PIE_CACHE" in /*) ;; *) die "PIE_CACHE must be an absolute path (is '$PIE_CACHE')";; esac
  # A plain (non-recursive) bind: the chroot's own mounts stay out of it.
  bind "$PIE_CACHE" "$ROOT$PIE_CACHE"
  for cfg in "$PIE_CACHE"/venv-*/pyvenv.cfg; do
    [ -f "$cfg" ] || continue
    home=$(awk -F' *= *' '$1 == "home" {print $2}' "$cfg")
    base=$(dirname "${home:-/}")      # .../versions/3.11.7 for .../3.11.7/bin
    case "$base" in
      /|/usr|/usr/*|/bin) log "note: $(dirname "$cfg") was made with the host's system Python ($home), which does not run inside the chroot" ;;
      *) [ -d "$base" ] && bind "$base" "$ROOT$base" ;;
    esac
  done
  return 0
}
in_root() { # run inside with a clean environment
  chroot "$1" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${@:2}"
}

sources() { # the chroot's apt sources for $SUITE
  if [ "$SUITE" = trixie ]; then
    cat <<SRC
deb $MIRROR trixie main
deb $MIRROR trixie-updates main
deb http://deb.debian.org/debian-security trixie-security main
SRC
  else
    echo "deb $MIRROR $SUITE main"
  fi
}
# sid's Release file is re-signed often and expires a week later; a mirror or
# proxy that lags (or a machine whose registry snapshot is old) serves an
# expired one, and apt then refuses the whole suite. The signature is still
# checked; only the date is not.
APT_OPTS=
[ "$SUITE" = sid ] && APT_OPTS="-o Acquire::Check-Valid-Until=false"

create() {
  lock "gimp-host-$SUITE"
  if [ -f "$ROOT/.pie-complete" ] && [ "$(cat "$ROOT/.pie-complete")" = "$STAMP_TEXT" ]; then return 0; fi
  local part=$ROOT.partial
  command -v debootstrap >/dev/null || run_step "apt-get install debootstrap" \
    bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap'
  need_disk 2500 "the GIMP $host chroot ($SUITE)"
  for d in "$ROOT" "$part"; do [ -d "$d" ] && { log "removing unfinished $d"; umount_all "$d"; rm -rf "$d"; }; done
  log "debootstrap $SUITE into $part (about 1 minute)"
  run_step "debootstrap --variant=minbase $SUITE (from $MIRROR)" \
    debootstrap --variant=minbase "$SUITE" "$part" "$MIRROR"
  sources > "$part/etc/apt/sources.list"
  [ -n "$APT_OPTS" ] && echo 'Acquire::Check-Valid-Until "false";' > "$part/etc/apt/apt.conf.d/99pie-valid-until"
  cp /etc/resolv.conf "$part/etc/resolv.conf"
  ROOT=$part mount_all
  log "installing GIMP $host inside (about 3 minutes)"
  if ! in_root "$part" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/tmp/apt.log 2>&1 && apt-get clean" ; then
    tail -n 20 "$part/tmp/apt.log" >&2 || true
    umount_all "$part"
    die "apt-get install of GIMP 3 inside the $SUITE chroot failed (see above; $part is left for inspection and will be rebuilt next time)"
  fi
  local v
  v=$(ROOT=$part gimp_version) || { umount_all "$part"; die "no GIMP 3 runs inside the new $SUITE chroot"; }
  [ "$(gimp_minor "$v")" = "$(gimp_host_minor "$host")" ] || { umount_all "$part"
    die "the $SUITE chroot has GIMP $v, not $(gimp_host_minor "$host").x; set PIE_DEBIAN_MIRROR to a mirror that carries it"; }
  umount_all "$part"
  echo "$STAMP_TEXT" > "$part/.pie-complete"
  mv "$part" "$ROOT"
  log "GIMP $v host ready at $ROOT"
}

# gimp_version: the version of the GIMP 3 inside $ROOT, by whichever name it
# ships (3.2 has no -3.0 names, 3.0 no -3 ones).
gimp_version() {
  local n out
  for n in gimp-console-3.2 gimp-console-3 gimp-console-3.0; do
    [ -x "$ROOT/usr/bin/$n" ] || continue
    out=$(in_root "$ROOT" "$n" --version 2>/dev/null) || continue
    out=$(printf '%s\n' "$out" | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -n1)
    [ -n "$out" ] && { echo "$out"; return 0; }
  done
  return 1
}

# The cargo environment for building inside: sid's exif library is
# gexiv2-0.16 (pkg-config gexiv2-0.16) where the gimp-gexiv2-sys crate asks
# for gexiv2; name the library for system-deps only where that is so.
build_env() {
  local pc=("$ROOT"/usr/lib/*/pkgconfig/gexiv2.pc "$ROOT"/usr/share/pkgconfig/gexiv2.pc)
  local pc16=("$ROOT"/usr/lib/*/pkgconfig/gexiv2-0.16.pc)
  if [ ! -e "${pc[0]}" ] && [ ! -e "${pc[1]}" ] && [ -e "${pc16[0]}" ]; then
    echo SYSTEM_DEPS_GEXIV2_NO_PKG_CONFIG=1 SYSTEM_DEPS_GEXIV2_LIB=gexiv2-0.16
  fi
}

case "${1:-create}" in
  create) create; echo "$ROOT" ;;
  run)
    shift; create
    # The lock only guards creating the chroot: let several runs (a build and
    # a test, two tests) share the finished one.
    [ -n "${PIE_LOCK_FD:-}" ] && exec {PIE_LOCK_FD}>&-
    mount_all
    # CARGO_HOME/RUSTUP_HOME first: a caller may run with a throwaway HOME.
    bind "${CARGO_HOME:-$HOME/.cargo}" "$ROOT/root/.cargo"
    bind "${RUSTUP_HOME:-$HOME/.rustup}" "$ROOT/root/.rustup"
    # Re-bind the clone when another one is mounted (it would run stale code),
    # but not under a run of this clone that is still going.
    if mountpoint -q "$ROOT/pie" && [ "$(stat -c %d:%i "$ROOT/pie")" != "$(stat -c %d:%i "$PIE_ROOT")" ]; then
      umount -l "$ROOT/pie"
    fi
    bind "$PIE_ROOT" "$ROOT/pie"
    bind_runtime
    # shellcheck disable=SC2046 # build_env prints NAME=VALUE words
    in_root "$ROOT" $(build_env) bash -c 'cd /pie && exec "$@"' bash "$@" ;;
  version) create; mount_all; gimp_version || die "no GIMP 3 runs inside $ROOT" ;;
  target) host_target "$host" ;;
  umount) [ -d "$ROOT" ] && umount_all "$ROOT"; true ;;
  remove) [ -d "$ROOT" ] && { umount_all "$ROOT"; rm -rf "$ROOT"; }; true ;;
  *) die "unknown command '$1' (create, run, version, target, umount, remove)" ;;
esac
