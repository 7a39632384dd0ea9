#!/usr/bin/env bash
# Installs pie for the current user:
#   the `pie` command                -> $PREFIX/bin/pie
#   the ONNX Runtime library         -> $PREFIX/lib/pie/
#   the trainer's Python environment -> $PREFIX/lib/pie/venv (a link to the cached venv,
#                                       with the trainer installed into it)
#   the GIMP 3 plug-in, where GIMP 3 is found
#                                    -> ~/.config/GIMP/3.0/plug-ins/pie/pie
#                                       (with the ONNX Runtime library and pie.env beside it)
# PREFIX defaults to ~/.local. Running it again updates everything in place.
#
#   ./install.sh [options]
#     --prefix DIR        install under DIR instead of ${PREFIX:-~/.local}
#     --plugin-dir DIR    GIMP 3 plug-ins folder (default ~/.config/GIMP/3.0/plug-ins)
#     --plugin-binary F   install this already built plug-in instead of building one
#     --gimp-host         build the plug-in in pie's GIMP 3 build host (a Debian 13
#                         chroot, build/gimp-host.sh; needs root). Also PIE_GIMP_HOST=1.
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
plugin_root=${plugin_root:-$HOME/.config/GIMP/3.0/plug-ins}
plugin_dir=$plugin_root/pie
bindir=$prefix/bin
libdir=$prefix/lib/pie

if [ "$uninstall" = 1 ]; then
  for f in "$bindir/pie"; do [ -e "$f" ] && { rm -f "$f"; log "removed $f"; }; done
  # The venv link is removed, not what it points to (the shared build cache).
  if [ -e "$libdir" ] || [ -L "$libdir/venv" ]; then rm -rf "$libdir"; log "removed $libdir"; fi
  if [ -d "$plugin_dir" ]; then rm -rf "$plugin_dir"; log "removed the GIMP plug-in $plugin_dir"; fi
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
trainer_python=
if [ "$with_trainer" = 1 ]; then
  py=$(bash build/trainer-env.sh)
  venv=$(cd "$(dirname "$py")/.." && pwd)
  ln -sfn "$venv" "$libdir/venv"
  # With setuptools in the venv (Python < 3.12), build without isolation: no
  # download of a build backend; otherwise pip fetches setuptools from PyPI.
  isolation=
  "$py" -c 'import setuptools' >/dev/null 2>&1 && isolation=--no-build-isolation
  run_step "pip install of the trainer into $venv" \
    "$py" -m pip install -q --no-deps $isolation --disable-pip-version-check --upgrade ./trainer
  trainer_python=$libdir/venv/bin/python
  log "installed the trainer into $venv (linked as $libdir/venv)"
else
  log "skipped the trainer (--no-trainer): Learn Scene / Learn Subject will say how to add it"
fi

# --- the GIMP 3 plug-in -------------------------------------------------------
gimp_help="GIMP 3 comes with Debian 13, Ubuntu 25.04, Fedora 42 and later, as the Flatpak
  org.gimp.GIMP (flatpak install flathub org.gimp.GIMP) and as an AppImage from
  https://www.gimp.org/downloads/; install it (with its development files, e.g.
  libgimp-3.0-dev, to build the plug-in) and run ./install.sh again."
plugin_note=
install_plugin() { # install_plugin BINARY [PATH_MAP_ROOT]
  local bin=$1 root=${2:-} f
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
  log "installed the GIMP 3 plug-in in $plugin_dir (Filters > Personalize)"
}

gimp2_only() {
  command -v gimp-2.10 >/dev/null 2>&1 && return 0
  command -v gimp >/dev/null 2>&1 && gimp --version 2>/dev/null | grep -q 'version 2\.' && return 0
  return 1
}

if [ "$with_plugin" = 0 ]; then
  plugin_note="skipped the GIMP plug-in (--no-plugin)"
elif [ -n "$plugin_binary" ]; then
  [ -x "$plugin_binary" ] || die "--plugin-binary $plugin_binary is not an executable file"
  install_plugin "$plugin_binary"
elif [ "$gimp_host" = 1 ]; then
  host_root=$(bash build/gimp-host.sh)
  run_step "cargo fetch (crates.io)" cargo fetch
  # The host's build folder lives in the cache (build/common.sh: host_target).
  host_target=$(host_target) || die "cannot prepare the GIMP 3 host's build folder"
  phase "building the plug-in in the GIMP 3 host" \
    run_step "cargo build -p pie-gimp in the GIMP 3 host" \
    nice bash build/gimp-host.sh run env CARGO_TARGET_DIR="$host_target" cargo build --offline --release -p pie-gimp
  root=
  case "$prefix" in "$host_root"/*) root=$host_root ;; esac
  install_plugin "$host_target/release/pie-gimp" "$root"
  [ -n "$root" ] || plugin_note="the plug-in links the GIMP 3 host's libgimp-3.0: it runs in that host's GIMP (build/gimp-host.sh run gimp-3.0)"
elif command -v gimp-console-3.0 >/dev/null 2>&1 || command -v gimp-3.0 >/dev/null 2>&1; then
  if ! pkg-config --exists gimp-3.0 2>/dev/null; then
    plugin_note="GIMP 3 is installed but its development files are not (pkg-config gimp-3.0): install libgimp-3.0-dev (Debian/Ubuntu) or gimp-devel (Fedora) and run ./install.sh again. The plug-in was NOT installed."
  else
    phase "building the plug-in (cargo build --release -p pie-gimp)" \
      run_step "cargo build --release -p pie-gimp" nice cargo build --release -p pie-gimp
    install_plugin "$target/release/pie-gimp"
  fi
elif gimp2_only; then
  plugin_note="only GIMP 2.10 was found; pie's plug-in needs GIMP 3, so the plug-in was NOT installed.
  $gimp_help"
else
  plugin_note="GIMP 3 was not found, so the plug-in was NOT installed.
  $gimp_help"
fi

echo
echo "pie is installed:"
echo "  command line:  $bindir/pie   (try: pie doctor)"
case ":$PATH:" in *":$bindir:"*) ;; *) echo "  note: $bindir is not on your PATH; add it, e.g. export PATH=\"$bindir:\$PATH\"" ;; esac
echo "  libraries:     $libdir"
if [ -n "$plugin_note" ]; then
  echo "  GIMP plug-in:  $plugin_note"
else
  echo "  GIMP plug-in:  $plugin_dir/pie (restart GIMP; Filters > Personalize)"
fi
