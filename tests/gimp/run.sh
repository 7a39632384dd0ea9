#!/usr/bin/env bash
# End-to-end tests of pie's GIMP 3 plug-in against real GIMP 3.0 and 3.2 in the
# GIMP 3 build-and-test hosts (build/gimp-host.sh; needs root). Assumes the host,
# the ONNX Runtime library and the trainer environment are set up (tests/run.sh
# does that first); builds nothing itself except through install.sh.
#
#   bash tests/gimp/run.sh [HOST] prints PASS/FAIL per check and "N passed, M failed";
#                                 exits 1 when any check failed. HOST: 3.2 (the
#                                 whole suite), 3.0 (scope core: steps 1, 2/3, 5, 6),
#                                 or all (default: 3.2, then 3.0, and one count)
# The GIMP binaries (gimp-console-3.x, gimp-3.x) and the profile folder
# (~/.config/GIMP/3.x) come from the version found in the host.
#
# What it does, in a throwaway HOME inside the host:
#  1. GIMP started once in that HOME (so it has its own profile, as a user's),
#     then install.sh --gimp-host=HOST --cpu into it (pie, ONNX Runtime, trainer,
#     plug-in); the installed pie works with the build cache hidden (as after
#     rm -rf ~/.cache/pie); pie doctor says that profile holds the current plug-in, and says
#     stale for a changed copy (full scope). On 3.2, also a HOME where only 3.0
#     was used: pie goes into 3.0's profile, and 3.2 copies it on its first
#     start and registers the procedures
#  2. a Python-Fu batch (tests/gimp/e2e.py) in gimp-console-3.x: loads a real
#     photo, Learn Scene and Learn Subject (quick preset, few steps), selects a
#     rectangle, Add Subject, 2 variants, exports
#  3. checks: new layer above the source, named after subject and seed, inside
#     the selection; pixels outside the selection unchanged; the region changed;
#     the source layer untouched; equal to `pie add` with the same seed and inputs;
#     the same in 16-bit, linear float and grayscale images and for an offset layer
#  3b. the sd backbone (tests/gimp/sd.py), when the trainer's environment can run
#     it: Learn Scene with the model sd on the trainer's tiny checkpoint
#     (pie_trainer.sd.tiny; 2 steps, trainer argument --resolution 64), Learn
#     Subject on it, Add Subject with the concept's strength and guidance and
#     DPM++ 2M and a prompt and negative prompt: a new layer in the selection,
#     outside and the source layer untouched, equal to `pie add` with the same
#     prompts and without --strength/--guidance, different without the prompts;
#     a prompt with an unknown placeholder refused by name, no layer added
#  4. bad input from Script-Fu: no selection, unknown subject, empty library,
#     Learn Scene with the model sd but no checkpoint folder, a folder that is
#     no checkpoint, or a file for it:
#     GIMP exits with the batch failure code (70) and prints the message;
#     killing the plug-in during Learn Scene (what GIMP's cancel does) stops the
#     trainer and leaves the library as it was but for the run's checkpoint;
#     Learn Scene again under that name continues the run from it
#  4c. Forget Concept from Script-Fu: deletes a concept (the others stay) and a
#     stopped run's checkpoint; an unknown name exits 70 with the library's names
#  5. the interactive dialog under Xvfb, driven by xdotool (tests/gimp/gui.sh):
#     screenshot in tests/artifacts/gimp/, confirmed, last values remembered,
#     one Ctrl+Z removes all the layers of one Add; Forget Concept's dialog
#     confirmed deletes the concept it was given and nothing else
#  6. install.sh again (idempotent), then install.sh --uninstall
# Photos: ../shared/data beside the clone when present, else drawn in code.
# Knobs: PIE_GIMP_TEST_SCOPE=full|core (default full on 3.2, core on 3.0),
# PIE_GIMP_TEST_TRAIN_STEPS (default 60; 0 = the quick preset's own),
# PIE_GIMP_TEST_ADD_STEPS (default 12), PIE_GIMP_TEST_KEEP=1 keeps the test folder,
# PIE_GIMP_TEST_SKIP_GUI=1 leaves out step 5, PIE_GIMP_TEST_SKIP_SD=1 step 3b, PIE_GIMP_TEST_DRAWN=1 uses the drawn
# photos even where ../shared/data exists.
source "$(dirname "$0")/../../build/common.sh"
cd "$PIE_ROOT"
[ "$(id -u)" = 0 ] || die "the GIMP 3 host is a chroot and needs root (or skip these tests with PIE_SKIP_GIMP=1)"

GIMP_HOST=${1:-all}
if [ "$GIMP_HOST" = all ]; then
  # Each host in its own run, then one count over both.
  rc=0 total_p=0 total_f=0
  for h in 3.2 3.0; do
    out=$(mktemp)
    bash "$0" "$h" | tee "$out" || rc=1
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n1)
    rm -f "$out"
    [ -n "$last" ] || { rc=1; echo "GIMP $h: no count (the run stopped early)"; continue; }
    echo "GIMP $h: $last"
    total_p=$((total_p + ${last%% *})); f=${last#*, }; total_f=$((total_f + ${f%% *}))
  done
  echo "$total_p passed, $total_f failed"
  exit $rc
fi
gimp_host_suite "$GIMP_HOST" >/dev/null || die "unknown GIMP host '$GIMP_HOST' (3.0, 3.2 or all)"
export PIE_GIMP_VERSION=$GIMP_HOST
GIMP_FULL_VERSION=$(bash build/gimp-host.sh "$GIMP_HOST" version) || die "no GIMP runs in the $GIMP_HOST host"
MM=$(gimp_minor "$GIMP_FULL_VERSION")
CONSOLE=gimp-console-$MM GUI=gimp-$MM
if [ "$MM" = 3.0 ]; then SCOPE=${PIE_GIMP_TEST_SCOPE:-core}; else SCOPE=${PIE_GIMP_TEST_SCOPE:-full}; fi
log "GIMP $GIMP_FULL_VERSION ($CONSOLE, profile .config/GIMP/$MM), scope $SCOPE"

TRAIN_STEPS=${PIE_GIMP_TEST_TRAIN_STEPS:-60}
ADD_STEPS=${PIE_GIMP_TEST_ADD_STEPS:-12}
RECT=${PIE_GIMP_TEST_RECT:-96,56,80,80}
ART=$PIE_ROOT/tests/artifacts/gimp/$MM
PY=${PIE_TRAINER_PYTHON:-$(bash build/trainer-env.sh)}

HOSTROOT=$(bash build/gimp-host.sh "$GIMP_HOST")
T=$(mktemp -d "$HOSTROOT/tmp/pie-gimp-test.XXXXXX")
TI=${T#"$HOSTROOT"}              # the same folder, as seen inside the host
H=$T/home HI=$TI/home
mkdir -p "$H" "$T/data" "$T/out" "$ART"
rm -f "$ART"/*.png "$ART"/*.json "$ART"/*.log 2>/dev/null || true
cleanup() {
  cp -f "$T"/out/*.png "$T"/out/*.json "$T"/out/*.log "$ART"/ 2>/dev/null || true
  if [ "${PIE_GIMP_TEST_KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

passed=0 failed=0
declare -a failures=()
pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); printf 'FAIL  %s%s\n' "$1" "${2:+: $2}"; }
check() { # check NAME CMD...: PASS when CMD succeeds; its output explains a failure
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$out" | tail -n 5)"; fi
}
inside() { # inside CMD...: run in the host with the test HOME
  bash build/gimp-host.sh "$GIMP_HOST" run env HOME="$HI" LANG=C.UTF-8 PIE_TEST_GIMP="$GUI" PIE_TEST_DIR="$TI" PIE_TEST_RECT="$RECT" \
    PIE_TEST_TRAIN_STEPS="$TRAIN_STEPS" PIE_TEST_ADD_STEPS="$ADD_STEPS" PIE_TEST_SUBJECT="$TI/data/$subject_file" "$@"
}
console() { # console INTERPRETER CODE: $CONSOLE batch, headless
  inside timeout 900 "$CONSOLE" -i --batch-interpreter="$1" -b "$2" --quit
}
timings=()
timed() { local t0=$SECONDS; "$@"; local rc=$?; timings+=("$1 $((SECONDS - t0)) s"); return $rc; }

# --- photos -------------------------------------------------------------------
shared=$PIE_ROOT/../shared/data
if [ "${PIE_GIMP_TEST_DRAWN:-0}" != 1 ] && [ -f "$shared/scenes/mountains.png" ] && [ -f "$shared/instances/dog.jpg" ]; then
  cp "$shared/scenes/mountains.png" "$T/data/scene.png"
  cp "$shared/instances/dog.jpg" "$T/data/subject.jpg"
  subject_file=subject.jpg
  log "photos: ../shared/data (mountains.png, dog.jpg)"
else
  "$PY" tests/gimp/draw.py "$T/data/scene.png" "$T/data/subject.png"
  subject_file=subject.png
  log "photos: drawn by tests/gimp/draw.py (PIE_GIMP_TEST_DRAWN=1 or no ../shared/data)"
fi
"$PY" tests/gimp/check.py mask "$T/data/scene.png" "$RECT" "$T/data/mask.png"

# --- 1. install ---------------------------------------------------------------
cargo_home=${CARGO_HOME:-$HOME/.cargo} rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
install_it() {
  HOME=$H PREFIX=$H/.local CARGO_HOME=$cargo_home RUSTUP_HOME=$rustup_home \
    bash install.sh --gimp-host="$GIMP_HOST" --cpu >"$T/out/install.log" 2>&1
}
mkdir -p "$H/.config/GIMP/$MM"
# no first-run welcome dialog in the GUI test
printf '(show-welcome-dialog no)\n(check-updates no)\n' >"$H/.config/GIMP/$MM/gimprc"
# A HOME where this GIMP has been used: install.sh must find its profile.
first_start() { inside timeout 300 "$CONSOLE" -i -df --batch-interpreter=python-fu-eval -b "print(1)" --quit >"$T/out/first-start.log" 2>&1; }
timed first_start || log "GIMP's first start failed (see first-start.log)"
if timed install_it; then pass "install.sh --gimp-host installs into a HOME where GIMP $MM was started"; else
  fail "install.sh --gimp-host installs into a HOME where GIMP $MM was started" "$(tail -n 8 "$T/out/install.log")"; fi
plugin=$H/.config/GIMP/$MM/plug-ins/pie
check "installed: pie command, ONNX Runtime, trainer venv, plug-in with pie.env in GIMP $MM's profile" \
  test -x "$H/.local/bin/pie" -a -f "$H/.local/lib/pie/libonnxruntime.so.$ORT_VERSION" \
  -a -x "$H/.local/lib/pie/venv/bin/python" -a -x "$plugin/pie" -a -f "$plugin/pie.env" \
  -a -f "$plugin/libonnxruntime.so.$ORT_VERSION"
check "the installed trainer venv and ONNX Runtime libraries are pie's own (no links into the build cache)" \
  test -d "$H/.local/lib/pie/venv" -a ! -L "$H/.local/lib/pie/venv" -a -f "$H/.local/lib/pie/venv/.pie-from" \
  -a ! -L "$H/.local/lib/pie/libonnxruntime.so.$ORT_VERSION" -a ! -L "$plugin/libonnxruntime.so.$ORT_VERSION"
no_cache() { # no_cache CMD...: CMD in the host with the test HOME, the build cache hidden (as after rm -rf ~/.cache/pie)
  # A private mount namespace: the empty tmpfs covers the host's view of
  # $PIE_CACHE for this command only; nothing of the real cache is touched.
  unshare -m --propagation private bash -c '
    mount -t tmpfs -o size=1m,mode=755 pie-no-cache "$1" || exit 1
    host=$2 home=$3; shift 3
    exec bash build/gimp-host.sh "$host" run env HOME="$home" LANG=C.UTF-8 "$@"' _ "$HOSTROOT$PIE_CACHE" "$GIMP_HOST" "$HI" "$@"
}
survives() {
  local lib=$HI/.local/lib/pie out
  out=$(no_cache sh -c 'ls -A "$1" | wc -l' _ "$PIE_CACHE") && [ "$out" = 0 ] || { echo "the cache was not hidden: $out"; return 1; }
  no_cache "$lib/venv/bin/python" -I -c 'import torch, pie_trainer' || return 1
  out=$(no_cache "$HI/.local/bin/pie" doctor 2>&1)
  printf '%s\n' "$out" >>"$T/out/doctor-no-cache.log"
  grep -qF "ONNX Runtime: $lib/libonnxruntime.so.$ORT_VERSION (version" <<<"$out" &&
    grep -qF "trainer: $lib/venv/bin/python (installed), torch" <<<"$out" || { printf '%s\n' "$out"; return 1; }
  # The plug-in's own copy, as its pie.env names it.
  out=$(no_cache env ORT_DYLIB_PATH="$HI/.config/GIMP/$MM/plug-ins/pie/libonnxruntime.so.$ORT_VERSION" "$HI/.local/bin/pie" doctor 2>&1)
  grep -qF "ONNX Runtime: $HI/.config/GIMP/$MM/plug-ins/pie/libonnxruntime.so.$ORT_VERSION (version" <<<"$out" || { printf '%s\n' "$out"; return 1; }
  no_cache "$HI/.local/bin/pie" --library "$TI/no-cache-library" learn-scene "$TI/data/scene.png" --name s --device cpu \
    --trainer-arg=--steps --trainer-arg=2 --trainer-arg=--resolution --trainer-arg=16 >"$T/out/learn-no-cache.log" 2>&1 &&
    test -f "$T/no-cache-library/s/bundle.json" || { tail -n 5 "$T/out/learn-no-cache.log"; return 1; }
}
check "with the build cache gone (rm -rf ~/.cache/pie), the installed pie's ONNX Runtime and trainer work: doctor, a learn-scene" \
  survives
doctor_says() { # doctor_says TEXT: pie doctor, inside the host with the test HOME, prints TEXT
  local out
  out=$(inside "$HI/.local/bin/pie" doctor 2>&1) || true
  printf '%s\n' "$out" >>"$T/out/doctor.log"
  grep -qF "$1" <<<"$out" || { printf '%s\n' "$out" | grep -i gimp; return 1; }
}
doctor_current() {
  doctor_says "GIMP $GIMP_FULL_VERSION: " &&
    doctor_says "installed at $HI/.config/GIMP/$MM/plug-ins/pie/pie (GIMP $MM), the current one"
}
check "pie doctor finds GIMP $GIMP_FULL_VERSION and says its profile holds the current plug-in" doctor_current
if [ "$SCOPE" = full ]; then
  # An older pie in the profile (what an earlier install, or GIMP's one-time
  # copy of an older profile, leaves): any other binary than the one installed.
  stale() {
    cp -p "$plugin/pie" "$T/pie-current" && printf 'older' >>"$plugin/pie" &&
      doctor_says "stale at $HI/.config/GIMP/$MM/plug-ins/pie/pie (GIMP $MM)"
    local rc=$?
    cp -p "$T/pie-current" "$plugin/pie"
    return $rc
  }
  check "pie doctor says stale for an older pie in GIMP $MM's profile" stale
fi

if [ "$SCOPE" = full ]; then
  host_dir=$(host_target "$GIMP_HOST") || die "cannot prepare the GIMP $MM host's build folder"
  check "plug-in unit tests (cargo test -p pie-gimp in the host)" \
    nice bash build/gimp-host.sh "$GIMP_HOST" run env CARGO_TARGET_DIR="$host_dir" cargo test --offline --release -p pie-gimp
fi

# --- 2./3. headless end to end -------------------------------------------------
# GIMP is started from a folder of modules named as the trainer's imports
# (numpy, torch, PIL, pie_trainer, ...), as from a downloads folder: the
# plug-in inherits that working folder, and none of them may run.
mkdir -p "$T/poison"
for m in numpy.py onnx.py torch/__init__.py PIL/__init__.py pie_trainer/__init__.py pie_trainer/__main__.py; do
  mkdir -p "$(dirname "$T/poison/$m")"
  printf 'open(%s, "a").write(__name__ + "\\n")\n' "'$TI/out/poison-ran.txt'" >"$T/poison/$m"
done
e2e() {
  inside bash -c 'cd "$1" && shift && exec "$@"' _ "$TI/poison" \
    timeout 900 "$CONSOLE" -i --batch-interpreter=python-fu-eval \
    -b "exec(open('/pie/tests/gimp/e2e.py').read())" --quit >"$T/out/e2e.log" 2>&1
}
if timed e2e; then pass "Python-Fu batch: Learn Scene, Learn Subject, Add Subject, Blend Pasted Subject, export"; else
  fail "Python-Fu batch: Learn Scene, Learn Subject, Add Subject, Blend Pasted Subject, export" \
    "$("$PY" tests/gimp/check.py why "$T/out/e2e.json" 2>&1 || tail -n 8 "$T/out/e2e.log")"; fi
check "no module in GIMP's working folder ran as part of the trainer (Learn from a downloads folder)" \
  bash -c '[ -f "$1/out/e2e.json" ] && [ ! -e "$1/out/poison-ran.txt" ] || { cat "$1/out/poison-ran.txt" 2>/dev/null; exit 1; }' _ "$T"
if [ -f "$T/out/e2e.json" ] && [ -f "$T/out/flat.png" ]; then
  check "the procedures are in Filters > Personalize with labels, help text and attribution" \
    "$PY" tests/gimp/check.py menus "$T/out/e2e.json"
  check "the sd arguments come after the older ones (positional scripts keep working)" \
    "$PY" tests/gimp/check.py arguments "$T/out/e2e.json"
  check "new layer above the source, named after subject and seed, inside the selection" \
    "$PY" tests/gimp/check.py layer "$T/out/e2e.json" "$RECT"
  check "pixels outside the selection unchanged" \
    "$PY" tests/gimp/check.py outside "$T/data/scene.png" "$T/out/flat.png" "$T/data/mask.png"
  check "the selected region changed" \
    "$PY" tests/gimp/check.py changed "$T/data/scene.png" "$T/out/flat.png" "$T/data/mask.png"
  check "the source layer is untouched" \
    "$PY" tests/gimp/check.py same "$T/data/scene.png" "$T/out/source.png"
  check "2 variants: 2 layers, named after seeds 50 and 51" \
    "$PY" tests/gimp/check.py variants "$T/out/e2e.json"
  check "Blend Pasted Subject: a new layer on top, the pasted layer and the scene untouched, the bottom layer refused, a subject concept used" \
    "$PY" tests/gimp/check.py blend "$T/out/e2e.json" "$T/out/blend-before.png" "$T/out/blend-after.png" \
    "$T/out/blend-untouched.png" "$T/out/blend-subject-after.png"
  check "Blend Pasted Subject, learning the scene from the layer below first: a new scene, then its blend; an existing name refused" \
    "$PY" tests/gimp/check.py blend-learned "$T/out/e2e.json" "$T/out/blend-before.png" "$T/out/blend-learned-first.png" \
    "$H/.local/share/pie"
  for kind in u16 float-linear gray offset-layer; do
    check "$kind: Add writes a layer inside the selection, outside unchanged, region changed" \
      "$PY" tests/gimp/check.py format "$T/out/e2e.json" "$kind" "$RECT" "$T/out/$kind-before.png" \
      "$T/out/$kind-after.png" "$T/data/mask.png"
  done
  cli() {
    inside "$HI/.local/bin/pie" add "$TI/data/scene.png" --selection "$TI/data/mask.png" --concept subj \
      --seed 1234 --steps "$ADD_STEPS" --strength 0.7 --guidance 3 --device cpu --out "$TI/out/cli.png" \
      >"$T/out/cli.log" 2>&1
  }
  if timed cli; then
    check "the result equals \`pie add\` with the same seed and inputs" \
      "$PY" tests/gimp/check.py same "$T/out/cli.png" "$T/out/flat.png"
  else
    fail "the result equals \`pie add\` with the same seed and inputs" "pie add failed: $(tail -n 5 "$T/out/cli.log")"
  fi
else
  fail "the e2e batch wrote its results" "no e2e.json / flat.png"
fi

# --- 3c. a HOME where only GIMP 3.0 was used, on a newer GIMP ----------------------
# GIMP 3.2 copies the 3.0 profile once, on its first start, and only when its
# own does not exist: install.sh must put pie into 3.0's profile and leave 3.2's
# alone; after the first start 3.2 has pie and runs it.
if [ "$MM" != 3.0 ]; then
  H2=$T/home30 HI2=$TI/home30
  mkdir -p "$H2/.config/GIMP/3.0"
  cp "$H/.config/GIMP/$MM/gimprc" "$H2/.config/GIMP/3.0/gimprc"
  install_30() {
    HOME=$H2 PREFIX=$H2/.local CARGO_HOME=$cargo_home RUSTUP_HOME=$rustup_home \
      bash install.sh --gimp-host="$GIMP_HOST" --cpu --no-trainer >"$T/out/install-30.log" 2>&1 &&
      test -x "$H2/.config/GIMP/3.0/plug-ins/pie/pie" -a ! -e "$H2/.config/GIMP/$MM" &&
      grep -q "GIMP $MM has not been started yet" "$T/out/install-30.log"
  }
  check "install.sh in a HOME where only GIMP 3.0 was used: into 3.0's profile, $MM's left for GIMP to copy" \
    install_30
  run_30() {
    inside env HOME="$HI2" PIE_HOME="$HI/.local/share/pie" timeout 300 "$CONSOLE" -i \
      --batch-interpreter=plug-in-script-fu-eval -b "
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE \"$TI/data/scene.png\")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (gimp-image-select-rectangle image CHANNEL-OP-REPLACE ${RECT//,/ })
  (plug-in-pie-add-subject #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer)
                           #:concept \"subj\" #:seed 1 #:steps 2 #:device \"cpu\"))" --quit >"$T/out/run-30.log" 2>&1 &&
      test -x "$H2/.config/GIMP/$MM/plug-ins/pie/pie"
  }
  check "GIMP $MM's first start in that HOME copies pie from 3.0's profile, registers and runs Add Subject" \
    run_30
fi

# --- 3b.-4c. the rest of the suite (tests/gimp/more.sh): sd backbone, bad input,
# cancel and resume, Forget Concept; on the full scope only ---------------------------
killed_plugin=
if [ "$SCOPE" = full ]; then
  source tests/gimp/more.sh
else
  log "scope core: left out the sd backbone, bad input, cancel and Forget Concept checks (tests/gimp/more.sh)"
fi

# --- 5. the dialog under Xvfb ---------------------------------------------------
if [ "${PIE_GIMP_TEST_SKIP_GUI:-0}" = 1 ]; then
  log "skipped the dialog test (PIE_GIMP_TEST_SKIP_GUI=1)"
else
  gui() { inside timeout 900 xvfb-run -a -s '-screen 0 1280x900x24' bash /pie/tests/gimp/gui.sh >"$T/out/gui.log" 2>&1; }
  timed gui || true
  check "the Add Subject dialog appears under Xvfb (screenshot in tests/artifacts/gimp/)" \
    test -s "$T/out/add-subject-dialog.png"
  check "the dialog, confirmed with Return, runs and adds the layer" \
    "$PY" tests/gimp/check.py gui-dialog "$T/out/gui.json"
  check "the dialog's values are remembered (RUN_WITH_LAST_VALS uses its seed)" \
    "$PY" tests/gimp/check.py gui-last-values "$T/out/gui.json"
  check "one undo removes all the layers of one Add (2 variants)" \
    "$PY" tests/gimp/check.py gui-undo "$T/out/gui.json"
  check "the Learn Subject dialog (scenes listed from the library) cancels cleanly" \
    "$PY" tests/gimp/check.py gui-cancel "$T/out/gui.json"
  check "the Forget Concept dialog, confirmed with Return, deletes the concept it was given and nothing else" \
    bash -c "test -s '$T/out/forget-concept-dialog.png' && '$PY' tests/gimp/check.py gui-forget '$T/out/gui.json'"
  check "the Learn Scene dialog with the model sd (checkpoint folder, class word) cancels cleanly" \
    bash -c "test -s '$T/out/learn-scene-dialog.png' && '$PY' tests/gimp/check.py gui-cancel-scene '$T/out/gui.json'"
  if [ -n "$killed_plugin" ]; then
    check "the next Learn removes the temporary files of the cancelled one" \
      bash -c "! ls -d '$HOSTROOT'/tmp/pie-gimp-$killed_plugin-* 2>/dev/null"
  fi
fi

# --- 6. install.sh again (idempotent), then --uninstall ---------------------------
install_again() {
  install_it && test -x "$plugin/pie" -a -x "$H/.local/bin/pie" -a -d "$H/.local/lib/pie/venv" \
    -a ! -L "$H/.local/lib/pie/venv" -a ! -e "$H/.local/lib/pie/venv.old" &&
    "$H/.local/lib/pie/venv/bin/python" -I -c 'import torch, pie_trainer'
}
check "install.sh again over the installed pie (idempotent)" install_again
venv_target=$(cat "$H/.local/lib/pie/venv/.pie-from" 2>/dev/null || true)
uninstall_it() {
  HOME=$H PREFIX=$H/.local bash install.sh --uninstall >"$T/out/uninstall.log" 2>&1 &&
    test ! -e "$H/.local/bin/pie" -a ! -e "$H/.local/lib/pie" -a ! -e "$plugin" &&
    test -d "$H/.local/share/pie/subj" -a -x "$venv_target/bin/python"
}
check "install.sh --uninstall removes pie and the plug-in, keeps the library and the cached venv" uninstall_it

echo
echo "timings: ${timings[*]}"
[ ${#failures[@]} -eq 0 ] || printf 'failed: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
