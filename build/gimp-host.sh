#!/usr/bin/env bash
# The GIMP 3 build-and-test host: a Debian trixie chroot (Debian 12 ships only
# GIMP 2.10) with gimp, libgimp-3.0-dev and what the headless and dialog tests
# use, at $PIE_CACHE/trixie. Idempotent; an unfinished chroot is unmounted and
# rebuilt, never reused.
#   build/gimp-host.sh            create it if missing, print its path
#   build/gimp-host.sh run CMD... run CMD inside, with the Rust toolchain and
#                                 the clone bind-mounted at /pie (cwd /pie)
#   build/gimp-host.sh umount     undo every bind mount (safe to rm -rf after)
#   build/gimp-host.sh remove     umount, then delete the chroot
source "$(dirname "$0")/common.sh"

ROOT=$PIE_CACHE/trixie
MIRROR=${PIE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="gimp libgimp-3.0-dev pkg-config gcc libc6-dev ca-certificates xvfb xauth xdotool imagemagick python3-gi"
STAMP_TEXT="trixie $PACKAGES"

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

create() {
  lock gimp-host
  if [ -f "$ROOT/.pie-complete" ] && [ "$(cat "$ROOT/.pie-complete")" = "$STAMP_TEXT" ]; then return 0; fi
  local part=$ROOT.partial
  command -v debootstrap >/dev/null || run_step "apt-get install debootstrap" \
    bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap'
  need_disk 2500 "the GIMP 3 chroot"
  for d in "$ROOT" "$part"; do [ -d "$d" ] && { log "removing unfinished $d"; umount_all "$d"; rm -rf "$d"; }; done
  log "debootstrap trixie into $part (about 1 minute)"
  run_step "debootstrap --variant=minbase trixie (from $MIRROR)" \
    debootstrap --variant=minbase trixie "$part" "$MIRROR"
  cat > "$part/etc/apt/sources.list" <<SRC
deb $MIRROR trixie main
deb $MIRROR trixie-updates main
deb http://deb.debian.org/debian-security trixie-security main
SRC
  cp /etc/resolv.conf "$part/etc/resolv.conf"
  ROOT=$part mount_all
  log "installing GIMP 3 inside (about 3 minutes)"
  if ! in_root "$part" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/tmp/apt.log 2>&1 && apt-get clean" ; then
    tail -n 20 "$part/tmp/apt.log" >&2 || true
    umount_all "$part"
    die "apt-get install of GIMP 3 inside the trixie chroot failed (see above; $part is left for inspection and will be rebuilt next time)"
  fi
  in_root "$part" gimp-console-3.0 --version >/dev/null || { umount_all "$part"; die "gimp-console-3.0 does not run inside the new chroot"; }
  umount_all "$part"
  echo "$STAMP_TEXT" > "$part/.pie-complete"
  mv "$part" "$ROOT"
  log "GIMP 3 host ready at $ROOT"
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
    in_root "$ROOT" bash -c 'cd /pie && exec "$@"' bash "$@" ;;
  umount) [ -d "$ROOT" ] && umount_all "$ROOT"; true ;;
  remove) [ -d "$ROOT" ] && { umount_all "$ROOT"; rm -rf "$ROOT"; }; true ;;
  *) die "unknown command '$1' (create, run, umount, remove)" ;;
esac
