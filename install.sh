#!/usr/bin/env bash
# Installs pie for the current user:
#   the `pie` command                -> $PREFIX/bin/pie
#   the ONNX Runtime library         -> $PREFIX/lib/pie/
#   the trainer's Python environment -> $PREFIX/lib/pie/venv (its own copy of the cached
#                                       venv, hard-linked where it can be, with the
#                                       trainer installed into it: clearing the cache
#                                       leaves the installed pie working)
#   the GIMP 3 plug-in, where GIMP 3.x is found (3.0 and 3.2)
#                                    -> ~/.config/GIMP/3.x/plug-ins/pie/pie for each 3.x
#                                       profile the user has (with the ONNX Runtime
#                                       library and pie.env beside it)
# PREFIX defaults to ~/.local. Running it again updates everything in place.
#
#   ./install.sh [options]
#     --prefix DIR        install under DIR instead of ${PREFIX:-~/.local}
#     --plugin-dir DIR    GIMP 3 plug-ins folder (default: each ~/.config/GIMP/3.x/plug-ins)
#     --plugin-binary F   install this already built plug-in instead of building one
#     --gimp-host[=3.0|3.2]  build the plug-in in pie's GIMP 3 build host (a Debian
#                         chroot per GIMP version, build/gimp-host.sh; needs root;
#                         default 3.0 or $PIE_GIMP_VERSION). Also PIE_GIMP_HOST=1.
#     --cpu | --cuda      ONNX Runtime flavour (default: cuda when an NVIDIA driver is present)
#     --no-trainer        skip the trainer's environment (PyTorch, about 5 GB)
#     --no-plugin         skip the GIMP plug-in
#     --uninstall         remove what install.sh installed (never the concept library)
#     -h, --help
source "$(dirname "$0")/build/common.sh"
cd "$PIE_ROOT"

usage() { sed -n '2,/^source /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

prefix=${PREFIX:-$HOME/.local}
plugin_root=
plugin_binary=
gimp_host=${PIE_GIMP_HOST:-0}
flavour=auto
with_trainer=1
with_plugin=1
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a folder}; shift ;;
    --prefix=*) prefix=${1#*=} ;;
    --plugin-dir) plugin_root=${2:?--plugin-dir needs a folder}; shift ;;
    --plugin-dir=*) plugin_root=${1#*=} ;;
    --plugin-binary) plugin_binary=${2:?--plugin-binary needs a file}; shift ;;
    --plugin-binary=*) plugin_binary=${1#*=} ;;
    --gimp-host) gimp_host=1 ;;
    --gimp-host=*) gimp_host=1; PIE_GIMP_VERSION=${1#*=}; export PIE_GIMP_VERSION ;;
    --cpu) flavour=cpu ;;
    --cuda) flavour=cuda ;;
    --no-trainer) with_trainer=0 ;;
    --no-plugin) with_plugin=0 ;;
    --uninstall) uninstall=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see ./install.sh --help)" ;;
  esac
  shift
done
mkdir -p "$prefix" 2>/dev/null || die "cannot create $prefix"
prefix=$(cd "$prefix" && pwd)
bindir=$prefix/bin
libdir=$prefix/lib/pie
gimp_config=${XDG_CONFIG_HOME:-$HOME/.config}/GIMP

# profiles_present: the GIMP 3.x profile folders this user has.
profiles_present() {
  local d
  if [ -n "${GIMP3_DIRECTORY:-}" ]; then [ -d "$GIMP3_DIRECTORY" ] && echo "$GIMP3_DIRECTORY"; return 0; fi
  for d in "$gimp_config"/3.*/; do
    d=${d%/}
    [[ $(basename "$d") =~ ^3\.[0-9]+$ ]] && echo "$d"
  done
  return 0
}

if [ "$uninstall" = 1 ]; then
  for f in "$bindir/pie"; do [ -e "$f" ] && { rm -f "$f"; log "removed $f"; }; done
  # The installed venv is pie's own copy (an older install.sh left a link,
  # and rm removes the link, not the shared build cache it points to).
  if [ -e "$libdir" ] || [ -L "$libdir/venv" ]; then rm -rf "$libdir"; log "removed $libdir"; fi
  # Only plug-in folders this script wrote (it leaves pie.env there) go.
  for root in ${plugin_root:+"$plugin_root"} $(profiles_present | sed 's|$|/plug-ins|'); do
    d=$root/pie
    if [ -d "$d" ] && grep -qs "Written by pie's install.sh" "$d/pie.env"; then
      rm -rf "$d"; log "removed the GIMP plug-in $d"
    fi
  done
  lib=${PIE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/pie}
  [ -d "$lib" ] && log "your learned concepts are kept in $lib (delete that folder to remove them too)"
  log "pie is uninstalled"
  exit 0
fi

# --- the command line ---------------------------------------------------------
command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs and run ./install.sh again"
phase "building the pie command (cargo build --release -p pie-engine)" \
  run_step "cargo build --release -p pie-engine" nice cargo build --release -p pie-engine
mkdir -p "$bindir" "$libdir"
target=${CARGO_TARGET_DIR:-$PIE_ROOT/target}
install -m 755 "$target/release/pie" "$bindir/pie.new" && mv -f "$bindir/pie.new" "$bindir/pie"
log "installed $bindir/pie"

# --- ONNX Runtime -------------------------------------------------------------
ort_lib=$(bash build/onnxruntime.sh "$flavour")
ort_dir=$(dirname "$ort_lib")
for f in "$ort_dir"/libonnxruntime*.so*; do
  install -m 644 "$f" "$libdir/$(basename "$f").new" && mv -f "$libdir/$(basename "$f").new" "$libdir/$(basename "$f")"
done
log "installed ONNX Runtime $ORT_VERSION ($(basename "$ort_dir")) in $libdir"

# --- the trainer --------------------------------------------------------------
# The installed pie gets a trainer environment of its own at $libdir/venv, so
# that clearing or rebuilding the build cache ($PIE_CACHE) cannot break it: a
# copy of the cached venv made of hard links where both are on one file system
# (no second 5.8 GB; pip and Python replace files rather than write into them,
# so neither copy can change the other's), else a full copy. The trainer is
# installed into that copy, never into the shared cached venv.
# own_venv CACHED DEST: DEST a working copy of the venv CACHED, or fail with a message.
own_venv() {
  local cached=$1 dest=$2 need free f line tmp
  rm -rf "$dest"
  if cp -al "$cached" "$dest" 2>/dev/null; then
    venv_how="hard links to $cached (no extra disk space)"
  else
    rm -rf "$dest"
    need=$(du -sm "$cached" | cut -f1)
    free=$(df -Pm "$(dirname "$dest")" | awk 'NR==2{print $4}')
    if [ "$free" -lt $((need + 200)) ]; then
      log "error: the trainer environment needs $need MB under $(dirname "$dest"), only $free MB free (it cannot share the build cache's files from another file system); free some space, or install with --prefix on the file system of $PIE_CACHE, or use --no-trainer"
      return 1
    fi
    log "copying the trainer environment ($need MB: $(dirname "$dest") and $PIE_CACHE are on different file systems)"
    cp -a "$cached" "$dest" || { log "error: cannot copy $cached to $dest"; return 1; }
    venv_how="a copy of $cached"
  fi
  # The cached venv was built under a .partial name: its scripts' #! lines
  # name a python that never existed. Each is written as a new file, so the
  # cache's own (linked) script stays as it was.
  for f in "$dest"/bin/*; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    IFS= read -r line <"$f" || continue
    case "$line" in
      "#!$cached/bin/python"*) line=${line#"#!$cached"} ;;
      "#!$cached.partial/bin/python"*) line=${line#"#!$cached.partial"} ;;
      *) continue ;;
    esac
    tmp=$f.pie-new
    { printf '#!%s%s\n' "$dest" "$line"; tail -n +2 "$f"; } >"$tmp" && chmod --reference="$f" "$tmp" && mv -f "$tmp" "$f"
  done
  rm -f "$dest/.complete"
  printf '%s\n' "$cached" >"$dest/.pie-from"
}
trainer_python=
if [ "$with_trainer" = 1 ]; then
  py=$(bash build/trainer-env.sh)
  cached=$(cd "$(dirname "$py")/.." && pwd)
  own=$libdir/venv
  # The previous environment stays until the new one works (an older
  # install.sh left a link into the cache here; rm of a link keeps its target).
  rm -rf "$own.old"
  if [ -e "$own" ] || [ -L "$own" ]; then mv "$own" "$own.old"; fi
  restore() { rm -rf "$own"; if [ -e "$own.old" ] || [ -L "$own.old" ]; then mv "$own.old" "$own"; fi; }
  own_venv "$cached" "$own" || { restore; die "the installed pie's trainer environment could not be made (see above)"; }
  # With setuptools in the venv (Python < 3.12), build without isolation: no
  # download of a build backend; otherwise pip fetches setuptools from PyPI.
  isolation=
  "$own/bin/python" -c 'import setuptools' >/dev/null 2>&1 && isolation=--no-build-isolation
  out=$(mktemp)
  if ! "$own/bin/python" -m pip install -q --no-deps $isolation --disable-pip-version-check --upgrade ./trainer >"$out" 2>&1 ||
     ! "$own/bin/python" -I -c 'import torch, pie_trainer' >>"$out" 2>&1; then
    tail -n 25 "$out" >&2; rm -f "$out"; restore
    die "installing the trainer into $own failed (the lines above say why; the previous installation, if any, is kept)"
  fi
  rm -f "$out"
  # Single-file SD checkpoints carry no tokenizer: CLIP's vocabulary from PyPI, into pie's cache.
  bash build/clip-vocab.sh >/dev/null ||
    log "warning: CLIP's vocabulary could not be fetched from PyPI; single-file checkpoints will be refused until 'bash build/clip-vocab.sh' works"
  rm -rf "$own.old"
  trainer_python=$own/bin/python
  log "installed the trainer into $own ($venv_how)"
else
  log "skipped the trainer (--no-trainer): Learn Scene / Learn Subject will say how to add it"
fi

# --- the GIMP 3 plug-in -------------------------------------------------------
gimp_help="GIMP 3 comes with Debian 13, Ubuntu 25.04, Fedora 42 and later, as the Flatpak
  org.gimp.GIMP (flatpak install flathub org.gimp.GIMP) and as an AppImage from
  https://www.gimp.org/downloads/; install it (with its development files, e.g.
  libgimp-3.0-dev, to build the plug-in) and run ./install.sh again."
notes=()
installed_dirs=()
install_plugin() { # install_plugin BINARY PLUGINS_FOLDER [PATH_MAP_ROOT]
  local bin=$1 plugin_dir=$2/pie root=${3:-} f
  mkdir -p "$plugin_dir"
  install -m 755 "$bin" "$plugin_dir/pie.new" && mv -f "$plugin_dir/pie.new" "$plugin_dir/pie"
  for f in "$libdir"/libonnxruntime*.so*; do
    install -m 644 "$f" "$plugin_dir/$(basename "$f").new" && mv -f "$plugin_dir/$(basename "$f").new" "$plugin_dir/$(basename "$f")"
  done
  # Paths as GIMP will see them: inside the build host they lose its root.
  local inside=${libdir#"$root"} py=${trainer_python#"$root"}
  {
    echo "# Written by pie's install.sh: where the plug-in finds what it runs."
    echo "ORT_DYLIB_PATH=${plugin_dir#"$root"}/libonnxruntime.so.$ORT_VERSION"
    [ -n "$trainer_python" ] && echo "PIE_TRAINER_PYTHON=$py"
    echo "# The libraries beside the pie command: $inside"
  } > "$plugin_dir/pie.env"
  installed_dirs+=("$plugin_dir")
  log "installed the GIMP 3 plug-in in $plugin_dir (Filters > Personalize)"
}

# gimp_versions: the minor version (3.0, 3.2, ...) of each GIMP 3 on PATH, by
# any of the names its packages use (3.2 ships -3.2 and -3, 3.0 only -3.0).
gimp_versions() {
  local n v
  for n in gimp-console-3.2 gimp-3.2 gimp-console-3 gimp-3 gimp-console-3.0 gimp-3.0 gimp-console gimp; do
    command -v "$n" >/dev/null 2>&1 || continue
    v=$("$n" --version 2>/dev/null | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -n1)
    case "$v" in 3.*) gimp_minor "$v" ;; esac
  done | sort -uV
}

# plugin_targets MINOR...: sets targets to the plug-ins folders to install
# into: every 3.x profile the user has, and the profile of each GIMP found that
# has none yet, unless an older profile exists: GIMP copies an older profile
# into a new one only when the new one does not exist, so creating it would
# lose the user's settings. Then the older profile gets pie, and GIMP copies it.
# (Not a function whose output is captured: it adds to notes.)
targets=()
plugin_targets() {
  local v have
  targets=()
  if [ -n "$plugin_root" ]; then targets=("$plugin_root"); return 0; fi
  have=$(profiles_present)
  [ -n "$have" ] && mapfile -t targets < <(printf '%s\n' "$have" | sed 's|$|/plug-ins|')
  if [ -n "${GIMP3_DIRECTORY:-}" ]; then
    [ -n "$have" ] || targets=("$GIMP3_DIRECTORY/plug-ins")
    return 0
  fi
  for v in "$@"; do
    [ -d "$gimp_config/$v" ] && continue
    if [ -n "$have" ] || [ -d "$gimp_config/2.10" ]; then
      notes+=("GIMP $v has not been started yet in this account: on its first start it copies your older GIMP profile (with pie, where that has it) into $gimp_config/$v; run ./install.sh again after that start, so that later updates of pie reach GIMP $v")
      [ -n "$have" ] || notes+=("only a GIMP 2.10 profile exists: pie was not put into GIMP $v's profile yet, so that GIMP $v can still copy your 2.10 settings")
    else
      targets+=("$gimp_config/$v/plug-ins")
    fi
  done
}

flatpak_note() {
  local fp=$HOME/.var/app/org.gimp.GIMP
  if [ -d "$fp" ] || { command -v flatpak >/dev/null 2>&1 && flatpak info org.gimp.GIMP >/dev/null 2>&1; }; then
    notes+=("a Flatpak GIMP (org.gimp.GIMP) is here too: it runs plug-ins inside its sandbox with the runtime's own libraries, not this system's libgimp the plug-in was built against, and it does not see $prefix; so pie was NOT installed into its profile ($fp/config/GIMP/3.x/plug-ins). Use a GIMP from your distribution for pie, or see the README (Flatpak and AppImage)")
  fi
}

# install_everywhere BINARY [PATH_MAP_ROOT] MINOR...: the plug-in into every target.
install_everywhere() {
  local bin=$1 root=$2 d; shift 2
  plugin_targets "$@"
  if [ ${#targets[@]} -eq 0 ]; then
    notes+=("no GIMP 3 profile to install into yet: start GIMP once and run ./install.sh again")
    return 0
  fi
  for d in "${targets[@]}"; do install_plugin "$bin" "$d" "$root"; done
  # What `pie doctor` compares each profile's copy with (a stale one is an
  # older pie that GIMP still loads).
  sha256sum "$bin" | cut -d' ' -f1 >"$libdir/gimp-plugin.sha256"
}

gimp2_only() {
  command -v gimp-2.10 >/dev/null 2>&1 && return 0
  command -v gimp >/dev/null 2>&1 && gimp --version 2>/dev/null | grep -q 'version 2\.' && return 0
  return 1
}

# sid's (and other new distributions') exif library is gexiv2-0.16, where the
# gimp-gexiv2-sys crate asks pkg-config for gexiv2: name it for system-deps.
gexiv2_env() {
  if ! pkg-config --exists gexiv2 2>/dev/null && pkg-config --exists gexiv2-0.16 2>/dev/null; then
    export SYSTEM_DEPS_GEXIV2_NO_PKG_CONFIG=1 SYSTEM_DEPS_GEXIV2_LIB=gexiv2-0.16
  fi
}

mapfile -t versions < <(gimp_versions)
plugin_skipped=
if [ "$with_plugin" = 0 ]; then
  plugin_skipped="skipped the GIMP plug-in (--no-plugin)"
elif [ -n "$plugin_binary" ]; then
  [ -x "$plugin_binary" ] || die "--plugin-binary $plugin_binary is not an executable file"
  install_everywhere "$plugin_binary" "" "${versions[@]}"
elif [ "$gimp_host" = 1 ]; then
  host=${PIE_GIMP_VERSION:-3.0}
  host_root=$(bash build/gimp-host.sh "$host")
  host_minor=$(gimp_minor "$(bash build/gimp-host.sh "$host" version)")
  run_step "cargo fetch (crates.io)" cargo fetch
  # The host's build folder lives in the cache (build/common.sh: host_target).
  host_target=$(host_target "$host") || die "cannot prepare the GIMP $host host's build folder"
  phase "building the plug-in in the GIMP $host_minor host" \
    run_step "cargo build -p pie-gimp in the GIMP $host_minor host" \
    nice bash build/gimp-host.sh "$host" run env CARGO_TARGET_DIR="$host_target" cargo build --offline --release -p pie-gimp
  root=
  case "$prefix" in "$host_root"/*) root=$host_root ;; esac
  install_everywhere "$host_target/release/pie-gimp" "$root" "$host_minor"
  [ -n "$root" ] || notes+=("the plug-in links the GIMP $host_minor host's libgimp-3.0: it runs in that host's GIMP (build/gimp-host.sh $host run gimp-$host_minor)")
elif [ ${#versions[@]} -gt 0 ]; then
  log "found GIMP ${versions[*]}"
  if ! pkg-config --exists gimp-3.0 2>/dev/null; then
    plugin_skipped="GIMP ${versions[*]} is installed but its development files are not (pkg-config gimp-3.0): install libgimp-3.0-dev (Debian/Ubuntu) or gimp-devel (Fedora) and run ./install.sh again. The plug-in was NOT installed."
  else
    gexiv2_env
    phase "building the plug-in against libgimp $(pkg-config --modversion gimp-3.0) (cargo build --release -p pie-gimp)" \
      run_step "cargo build --release -p pie-gimp" nice cargo build --release -p pie-gimp
    install_everywhere "$target/release/pie-gimp" "" "${versions[@]}"
  fi
elif gimp2_only; then
  plugin_skipped="only GIMP 2.10 was found; pie's plug-in needs GIMP 3, so the plug-in was NOT installed.
  $gimp_help"
else
  plugin_skipped="GIMP 3 was not found (looked for gimp-console-3.2, gimp-3.2, gimp-console-3, gimp-3, gimp-console-3.0, gimp-3.0 on PATH), so the plug-in was NOT installed.
  $gimp_help"
fi
[ "$with_plugin" = 0 ] || flatpak_note

echo
echo "pie is installed:"
echo "  command line:  $bindir/pie   (try: pie doctor)"
case ":$PATH:" in *":$bindir:"*) ;; *) echo "  note: $bindir is not on your PATH; add it, e.g. export PATH=\"$bindir:\$PATH\"" ;; esac
echo "  libraries:     $libdir"
if [ -n "$plugin_skipped" ]; then
  echo "  GIMP plug-in:  $plugin_skipped"
elif [ ${#installed_dirs[@]} -gt 0 ]; then
  echo "  GIMP plug-in:  installed into ${#installed_dirs[@]} GIMP profile(s) (restart GIMP; Filters > Personalize):"
  printf '                 %s/pie\n' "${installed_dirs[@]}"
fi
for n in "${notes[@]}"; do echo "  note: $n"; done
