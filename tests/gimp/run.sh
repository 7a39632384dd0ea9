#!/usr/bin/env bash
# End-to-end tests of pie's GIMP 3 plug-in against real GIMP 3.0 in the GIMP 3
# build-and-test host (build/gimp-host.sh; needs root). Assumes the host, the
# ONNX Runtime library and the trainer environment are set up (tests/run.sh
# does that first); builds nothing itself except through install.sh.
#
#   bash tests/gimp/run.sh        prints PASS/FAIL per check and "N passed, M failed";
#                                 exits 1 when any check failed
#
# What it does, in a throwaway HOME inside the host:
#  1. install.sh --gimp-host --cpu into that HOME (pie, ONNX Runtime, trainer, plug-in)
#  2. a Python-Fu batch (tests/gimp/e2e.py) in gimp-console-3.0: loads a real
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
# Knobs: PIE_GIMP_TEST_TRAIN_STEPS (default 60; 0 = the quick preset's own),
# PIE_GIMP_TEST_ADD_STEPS (default 12), PIE_GIMP_TEST_KEEP=1 keeps the test folder,
# PIE_GIMP_TEST_SKIP_GUI=1 leaves out step 5, PIE_GIMP_TEST_SKIP_SD=1 step 3b, PIE_GIMP_TEST_DRAWN=1 uses the drawn
# photos even where ../shared/data exists.
source "$(dirname "$0")/../../build/common.sh"
cd "$PIE_ROOT"
[ "$(id -u)" = 0 ] || die "the GIMP 3 host is a chroot and needs root (or skip these tests with PIE_SKIP_GIMP=1)"

TRAIN_STEPS=${PIE_GIMP_TEST_TRAIN_STEPS:-60}
ADD_STEPS=${PIE_GIMP_TEST_ADD_STEPS:-12}
RECT=${PIE_GIMP_TEST_RECT:-96,56,80,80}
ART=$PIE_ROOT/tests/artifacts/gimp
PY=${PIE_TRAINER_PYTHON:-$(bash build/trainer-env.sh)}

HOSTROOT=$(bash build/gimp-host.sh)
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
  bash build/gimp-host.sh run env HOME="$HI" LANG=C.UTF-8 PIE_TEST_DIR="$TI" PIE_TEST_RECT="$RECT" \
    PIE_TEST_TRAIN_STEPS="$TRAIN_STEPS" PIE_TEST_ADD_STEPS="$ADD_STEPS" PIE_TEST_SUBJECT="$TI/data/$subject_file" "$@"
}
console() { # console INTERPRETER CODE: gimp-console-3.0 batch, headless
  inside timeout 900 gimp-console-3.0 -i --batch-interpreter="$1" -b "$2" --quit
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
    bash install.sh --gimp-host --cpu >"$T/out/install.log" 2>&1
}
mkdir -p "$H/.config/GIMP/3.0"
# no first-run welcome dialog in the GUI test
printf '(show-welcome-dialog no)\n(check-updates no)\n' >"$H/.config/GIMP/3.0/gimprc"
if timed install_it; then pass "install.sh --gimp-host installs into a fresh HOME"; else
  fail "install.sh --gimp-host installs into a fresh HOME" "$(tail -n 8 "$T/out/install.log")"; fi
plugin=$H/.config/GIMP/3.0/plug-ins/pie
check "installed: pie command, ONNX Runtime, trainer venv, plug-in with pie.env" \
  test -x "$H/.local/bin/pie" -a -f "$H/.local/lib/pie/libonnxruntime.so.$ORT_VERSION" \
  -a -x "$H/.local/lib/pie/venv/bin/python" -a -x "$plugin/pie" -a -f "$plugin/pie.env" \
  -a -f "$plugin/libonnxruntime.so.$ORT_VERSION"

host_dir=$(host_target) || die "cannot prepare the GIMP 3 host's build folder"
check "plug-in unit tests (cargo test -p pie-gimp in the host)" \
  nice bash build/gimp-host.sh run env CARGO_TARGET_DIR="$host_dir" cargo test --offline --release -p pie-gimp

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
    timeout 900 gimp-console-3.0 -i --batch-interpreter=python-fu-eval \
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
  check "Blend Pasted Subject: a new layer on top, the pasted layer and the scene untouched, the bottom layer refused" \
    "$PY" tests/gimp/check.py blend "$T/out/e2e.json" "$T/out/blend-before.png" "$T/out/blend-after.png" \
    "$T/out/blend-untouched.png"
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

# --- 3b. the sd backbone on the trainer's tiny checkpoint --------------------------
sd_probe() { PYTHONPATH=$PIE_ROOT/trainer "$PY" -c "import diffusers, transformers, peft, pie_trainer.sd.tiny" >/dev/null 2>&1; }
if [ "${PIE_GIMP_TEST_SKIP_SD:-0}" = 1 ]; then
  log "skipped the sd backbone test (PIE_GIMP_TEST_SKIP_SD=1)"
elif ! sd_probe; then
  log "SKIP the sd backbone test: the trainer's environment cannot run it (diffusers, transformers, peft)"
else
  sd_prompt="a photo of {subject} on the grass of {scene}" sd_negative="blurry"
  sd_tiny() { PYTHONPATH=$PIE_ROOT/trainer "$PY" -m pie_trainer.sd.tiny "$T/sd-base" >"$T/out/sd-tiny.log" 2>&1; }
  sd_e2e() {
    inside env PIE_TEST_SD_BASE="$TI/sd-base" PIE_TEST_SD_SEED=3 PIE_TEST_SD_PROMPT="$sd_prompt" \
      PIE_TEST_SD_NEGATIVE="$sd_negative" timeout 600 gimp-console-3.0 -i \
      --batch-interpreter=python-fu-eval -b "exec(open('/pie/tests/gimp/sd.py').read())" --quit >"$T/out/sd.log" 2>&1
  }
  name="Python-Fu batch, model sd (tiny checkpoint): Learn Scene, Learn Subject, Add Subject with DPM++ 2M"
  if ! timed sd_tiny; then fail "$name" "pie_trainer.sd.tiny failed: $(tail -n 5 "$T/out/sd-tiny.log")"
  elif timed sd_e2e; then pass "$name"
  else fail "$name" "$("$PY" tests/gimp/check.py why "$T/out/sd.json" 2>&1 || tail -n 8 "$T/out/sd.log")"; fi
  if [ -f "$T/out/sd.json" ] && [ -f "$T/out/sd-flat.png" ]; then
    check "sd: the subject grew on its scene's sd model with the class words and the trainer arguments given" \
      "$PY" tests/gimp/check.py sd-bundle "$H/.local/share/pie/sd-subj/bundle.json" 64 landscape ball
    check "sd: a new layer above the source, named after subject and seed, inside the selection" \
      "$PY" tests/gimp/check.py layer "$T/out/sd.json" "$RECT" sd-subj 3
    check "sd: pixels outside the selection unchanged" \
      "$PY" tests/gimp/check.py outside "$T/data/scene.png" "$T/out/sd-flat.png" "$T/data/mask.png"
    check "sd: the selected region changed" \
      "$PY" tests/gimp/check.py changed "$T/data/scene.png" "$T/out/sd-flat.png" "$T/data/mask.png"
    check "sd: the source layer is untouched" \
      "$PY" tests/gimp/check.py same "$T/data/scene.png" "$T/out/sd-source.png"
    check "sd: a prompt with an unknown placeholder is refused, named, and adds no layer" \
      "$PY" tests/gimp/check.py sd-bad-prompt "$T/out/sd.json"
    # The same Add through the command line, with the prompts and without them.
    sd_cli() {
      inside "$HI/.local/bin/pie" add "$TI/data/scene.png" --selection "$TI/data/mask.png" --concept sd-subj \
        --seed 3 --steps 4 --scheduler dpm++2m --device cpu "$@" >>"$T/out/sd-cli.log" 2>&1
    }
    name="sd: the concept's strength and guidance and the prompts reach the engine as \`pie add\`'s (same pixels)"
    if timed sd_cli --prompt "$sd_prompt" --negative-prompt "$sd_negative" --out "$TI/out/sd-cli.png"; then
      check "$name" "$PY" tests/gimp/check.py same "$T/out/sd-cli.png" "$T/out/sd-flat.png"
    else
      fail "$name" "pie add failed: $(tail -n 5 "$T/out/sd-cli.log")"
    fi
    name="sd: the prompts change the result (pie add without them differs)"
    if timed sd_cli --out "$TI/out/sd-cli-noprompt.png"; then
      check "$name" "$PY" tests/gimp/check.py changed "$T/out/sd-cli-noprompt.png" "$T/out/sd-flat.png" "$T/data/mask.png"
    else
      fail "$name" "pie add failed: $(tail -n 5 "$T/out/sd-cli.log")"
    fi
  else
    fail "sd: the batch wrote its results" "no sd.json / sd-flat.png"
  fi
fi

# --- 4. bad input from Script-Fu -------------------------------------------------
sf_add() { # sf_add SELECT-EXPR CONCEPT: load the scene, maybe select, Add Subject
  cat <<SCM
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE "$TI/data/scene.png")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  $1
  (plug-in-pie-add-subject #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer)
                           #:concept "$2" #:seed 1 #:steps 2 #:device "cpu"))
SCM
}
bad_input() { # bad_input NAME EXPECTED-TEXT SCHEME [ENV...]
  local name=$1 want=$2 code=$3 rc out; shift 3
  rc=0
  out=$(inside "$@" timeout 300 gimp-console-3.0 -i --batch-interpreter=plug-in-script-fu-eval -b "$code" --quit 2>&1) || rc=$?
  printf '%s\n' "$out" >"$T/out/bad-$(echo "$name" | tr -c 'a-z' '-' | cut -c1-30).log"
  if [ $rc -eq 70 ] && grep -qF "$want" <<<"$out"; then pass "$name"
  else fail "$name" "exit $rc (want 70), message: $(grep -i 'pie\|error' <<<"$out" | head -n 3)"; fi
}
bad_input "Add with no selection: GIMP exits 70 with the message" \
  "Add Subject needs a selection" "$(sf_add "" subj)"
learned=subj   # the sd test (3b) adds its own subject
[ -e "$H/.local/share/pie/sd-subj" ] && learned="sd-subj, subj"
bad_input "Add with an unknown subject: the message lists the learned ones" \
  "Learned subjects: $learned." "$(sf_add "(gimp-image-select-rectangle image CHANNEL-OP-REPLACE ${RECT//,/ })" nope)"
mkdir -p "$T/empty-library"
bad_input "Add with an empty library: the message says how to learn one" \
  "has no learned subject yet" "$(sf_add "(gimp-image-select-rectangle image CHANNEL-OP-REPLACE ${RECT//,/ })" subj)" \
  PIE_HOME="$TI/empty-library"

bad_input "Add on CUDA where there is none: the message says why" \
  "CUDA cannot be used here" \
  "$(sf_add "(gimp-image-select-rectangle image CHANNEL-OP-REPLACE ${RECT//,/ })" subj | sed 's/#:device "cpu"/#:device "cuda"/')"
bad_input "Add without the ONNX Runtime library: the message says how to install it" \
  "install.sh" "$(sf_add "(gimp-image-select-rectangle image CHANNEL-OP-REPLACE ${RECT//,/ })" subj)" \
  ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so
bad_input "Learn Scene without the trainer environment: the message says how to install it" \
  "install.sh" "(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE \"$TI/data/scene.png\")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (plug-in-pie-learn-scene #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer) #:name \"x\"))" \
  PIE_TRAINER_PYTHON=/nonexistent/python

bad_input "Learn Scene under a learned concept's name: the message says to tick Replace" \
  "tick 'Replace an existing concept of that name'" "(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE \"$TI/data/scene.png\")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (plug-in-pie-learn-scene #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer) #:name \"scene\"))"

sf_learn_sd() { # sf_learn_sd EXTRA-ARGS: Learn Scene with the model sd
  cat <<SCM
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE "$TI/data/scene.png")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (plug-in-pie-learn-scene #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer)
                           #:name "sd-bad" #:backbone "sd" #:device "cpu" $1))
SCM
}
bad_input "Learn Scene, model sd without a checkpoint: the message says to choose its folder" \
  "choose its folder" "$(sf_learn_sd "")"
bad_input "Learn Scene, model sd, a folder that is no checkpoint: the message says what it lacks" \
  "has no model_index.json" "$(sf_learn_sd "#:base \"$TI/data\"")"
# The argument is a folder argument: GIMP itself refuses a file for it.
bad_input "Learn Scene, model sd, a file as checkpoint: GIMP refuses the argument" \
  "for argument 'base'" "$(sf_learn_sd "#:base \"$TI/data/scene.png\"")"
check "the refused sd Learn Scenes started nothing: the library has no sd-bad" \
  test ! -e "$H/.local/share/pie/sd-bad"

# --- 4b. cancel while learning ---------------------------------------------------
# GIMP's cancel button kills the plug-in (SIGKILL; GIMP 3.0
# app/plug-in/gimpplugin-progress.c). Do the same to a Learn Scene run and check
# that the trainer stops too and the library gains nothing.
cancel_learning() {
  local plug= trainer= bg rc=0 i
  inside timeout 600 gimp-console-3.0 -i --batch-interpreter=plug-in-script-fu-eval -b "
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE \"$TI/data/scene.png\")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (plug-in-pie-learn-scene #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer)
                           #:name \"cancelled\" #:preset \"quick\" #:steps $RESUME_STEPS #:device \"cpu\"))" --quit \
    >"$T/out/cancel.log" 2>&1 &
  bg=$!
  for i in $(seq 1 300); do
    plug=$(pgrep -f "^$HI/.config/GIMP/3.0/plug-ins/pie/pie " | head -n1 || true)
    [ -n "$plug" ] && trainer=$(pgrep -P "$plug" -f pie_trainer | head -n1 || true)
    [ -n "$trainer" ] && break
    sleep 0.2
  done
  if [ -z "$trainer" ]; then
    fail "cancelling Learn Scene stops the trainer" "the trainer never started (see cancel.log)"
    wait "$bg" || true
    return 0
  fi
  # Into the training loop (the trainer writes the run's meta.json first), then a few steps.
  for i in $(seq 1 300); do [ -f "$H/.local/share/pie/.checkpoints/cancelled/meta.json" ] && break; sleep 0.2; done
  sleep 3
  kill -9 "$plug"              # what GIMP's cancel does
  for i in $(seq 1 100); do kill -0 "$trainer" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$trainer" 2>/dev/null; then
    fail "cancelling Learn Scene stops the trainer" "trainer $trainer still runs 20 s after the plug-in was killed"
    kill "$trainer" 2>/dev/null || true
  else
    pass "cancelling Learn Scene stops the trainer"
  fi
  killed_plugin=$plug
  wait "$bg" || rc=$?
  if [ $rc -ne 0 ] && [ ! -e "$H/.local/share/pie/cancelled" ]; then
    pass "after the cancel GIMP reports the failure and the library gained nothing"
  else
    fail "after the cancel GIMP reports the failure and the library gained nothing" \
      "GIMP exit $rc; library: $(ls -A "$H/.local/share/pie" | tr '\n' ' ')"
  fi
}
killed_plugin=
RESUME_STEPS=400
timed cancel_learning
check "the cancelled Learn Scene left a resumable checkpoint" test -f "$H/.local/share/pie/.checkpoints/cancelled/state.pt"
# Learn Scene again under the same name: "Continue a stopped run" (TRUE by default) continues it.
resume_learning() {
  inside timeout 600 gimp-console-3.0 -i --batch-interpreter=plug-in-script-fu-eval -b "
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE \"$TI/data/scene.png\")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (plug-in-pie-learn-scene #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer)
                           #:name \"cancelled\" #:preset \"quick\" #:steps $RESUME_STEPS #:device \"cpu\"))" --quit \
    >"$T/out/resume.log" 2>&1
}
if timed resume_learning; then
  check "Learn Scene of the same name continues the stopped run (the bundle says resumed) and clears its checkpoint" \
    "$PY" -c "import json, os, sys; t = json.load(open(sys.argv[1]))['training']
assert t['resumed'] is True and t['steps'] == $RESUME_STEPS, t
assert not os.path.exists(sys.argv[2]), 'the checkpoint is still there'" \
    "$H/.local/share/pie/cancelled/bundle.json" "$H/.local/share/pie/.checkpoints/cancelled/state.pt"
else
  fail "Learn Scene of the same name continues the stopped run (the bundle says resumed) and clears its checkpoint" \
    "$(grep -i 'pie\|error' "$T/out/resume.log" | tail -n 3)"
fi

# --- 4c. Forget Concept ----------------------------------------------------------
# A copy of the learned subject, and the checkpoint of a stopped training run
# (what `learn-* --resume` continues: state.pt), to be forgotten; "subj" stays.
lib=$H/.local/share/pie
cp -a "$lib/subj" "$lib/forget-me"
mkdir -p "$lib/.checkpoints/stopped-run" && printf 'x' >"$lib/.checkpoints/stopped-run/state.pt"
sf_forget() { # sf_forget NAME: Forget Concept from Script-Fu
  cat <<SCM
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE "$TI/data/scene.png")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (plug-in-pie-forget-concept #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer) #:concept "$1"))
SCM
}
forget() { inside timeout 300 gimp-console-3.0 -i --batch-interpreter=plug-in-script-fu-eval -b "$(sf_forget "$1")" --quit \
  >"$T/out/forget-$1.log" 2>&1; }
if timed forget forget-me && [ ! -e "$lib/forget-me" ] && [ -f "$lib/subj/bundle.json" ] \
   && ! inside "$HI/.local/bin/pie" concepts list 2>&1 | grep -q forget-me; then
  pass "Forget Concept deletes the concept (gone from pie concepts list), the others stay"
else
  fail "Forget Concept deletes the concept (gone from pie concepts list), the others stay" \
    "library: $(ls -A "$lib" | tr '\n' ' '); $(tail -n 3 "$T/out/forget-forget-me.log")"
fi
if timed forget stopped-run && [ ! -e "$lib/.checkpoints/stopped-run" ]; then
  pass "Forget Concept deletes a stopped training run's checkpoint"
else
  fail "Forget Concept deletes a stopped training run's checkpoint" "$(tail -n 3 "$T/out/forget-stopped-run.log")"
fi
bad_input "Forget Concept of an unknown name: GIMP exits 70, the message suggests the near name" \
  'concept named "subjj" in '"$HI"'/.local/share/pie (did you mean "subj"?' "$(sf_forget subjj)"
check "the refused Forget Concept deleted nothing" test -f "$lib/subj/bundle.json" -a -f "$lib/scene/bundle.json"

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
  install_it && test -x "$plugin/pie" -a -x "$H/.local/bin/pie" -a -L "$H/.local/lib/pie/venv"
}
check "install.sh again over the installed pie (idempotent)" install_again
venv_target=$(readlink -f "$H/.local/lib/pie/venv" || true)
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
