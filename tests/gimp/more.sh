# Sourced by tests/gimp/run.sh on the full scope (never run alone): the sd
# backbone, bad input from Script-Fu, cancel and resume, Forget Concept. Uses
# run.sh's variables and helpers (inside, check, pass, fail, timed, $CONSOLE, $MM).
# shellcheck shell=bash disable=SC2154
# --- 3b. the sd backbone on the trainer's tiny checkpoint --------------------------
sd_probe() { PYTHONPATH=$PIE_ROOT/trainer "$PY" -c "import diffusers, transformers, peft, pie_trainer.sd.tiny" >/dev/null 2>&1; }
if [ "${PIE_GIMP_TEST_SKIP_SD:-0}" = 1 ]; then
  log "skipped the sd backbone test (PIE_GIMP_TEST_SKIP_SD=1)"
elif ! sd_probe; then
  log "SKIP the sd backbone test: the trainer's environment cannot run it (diffusers, transformers, peft)"
else
  sd_prompt="a photo of {subject} on the grass of {scene}" sd_negative="blurry"
  sd_tiny() {
    PYTHONPATH=$PIE_ROOT/trainer "$PY" -m pie_trainer.sd.tiny "$T/sd-base" >"$T/out/sd-tiny.log" 2>&1 &&
      PYTHONPATH=$PIE_ROOT/trainer "$PY" -m pie_trainer.sdxl.tiny "$T/sdxl-base" >>"$T/out/sd-tiny.log" 2>&1
  }
  sd_e2e() {
    inside env PIE_TEST_SD_BASE="$TI/sd-base" PIE_TEST_SDXL_BASE="$TI/sdxl-base" PIE_TEST_SD_SEED=3 PIE_TEST_SD_PROMPT="$sd_prompt" \
      PIE_TEST_SD_NEGATIVE="$sd_negative" timeout 600 "$CONSOLE" -i \
      --batch-interpreter=python-fu-eval -b "exec(open('/pie/tests/gimp/sd.py').read())" --quit >"$T/out/sd.log" 2>&1
  }
  name="Python-Fu batch, model sd (tiny checkpoint): Learn Scene, Learn Subject, Add Subject with DPM++ 2M; model sdxl: Learn Scene, Learn Subject, Add Subject"
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
    check "sdxl: Learn Scene with the model sdxl wrote an sdxl scene with the trainer arguments given" \
      "$PY" tests/gimp/check.py sdxl-scene "$H/.local/share/pie/sdxl-scene/bundle.json" 64
    check "sdxl: Add Subject with a subject learned on that scene kept the pixels outside the selection" \
      "$PY" tests/gimp/check.py outside "$T/data/scene.png" "$T/out/sdxl-flat.png" "$T/data/mask.png"
    check "sdxl: and changed the selected region" \
      "$PY" tests/gimp/check.py changed "$T/data/scene.png" "$T/out/sdxl-flat.png" "$T/data/mask.png"
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
  out=$(inside "$@" timeout 300 "$CONSOLE" -i --batch-interpreter=plug-in-script-fu-eval -b "$code" --quit 2>&1) || rc=$?
  printf '%s\n' "$out" >"$T/out/bad-$(echo "$name" | tr -c 'a-z' '-' | cut -c1-30).log"
  if [ $rc -eq 70 ] && grep -qF "$want" <<<"$out"; then pass "$name"
  else fail "$name" "exit $rc (want 70), message: $(grep -i 'pie\|error' <<<"$out" | head -n 3)"; fi
}
bad_input "Add with no selection: GIMP exits 70 with the message" \
  "Add Subject needs a selection" "$(sf_add "" subj)"
# The sd test (3b) adds its own subjects, sorted by name in the message.
learned=$(for s in sd-subj sdxl-subj subj; do [ "$s" = subj ] || [ -e "$H/.local/share/pie/$s" ] && printf '%s\n' "$s"; done \
  | paste -sd, - | sed 's/,/, /g')
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
printf 'x' > "$T/data/model.ckpt"
bad_input "Learn Scene, model sd, a .ckpt as the single file: refused as a pickle before anything starts" \
  "is a pickle checkpoint" "$(sf_learn_sd "#:base-file \"$TI/data/model.ckpt\"")"
bad_input "Learn Scene, model sd, a PNG as the single file: not a .safetensors checkpoint" \
  "is not a .safetensors checkpoint" "$(sf_learn_sd "#:base-file \"$TI/data/scene.png\"")"
check "the refused sd Learn Scenes started nothing: the library has no sd-bad" \
  test ! -e "$H/.local/share/pie/sd-bad"

# --- 4b. cancel while learning ---------------------------------------------------
# GIMP's cancel button kills the plug-in (SIGKILL; GIMP 3.0
# app/plug-in/gimpplugin-progress.c). Do the same to a Learn Scene run and check
# that the trainer stops too and the library gains nothing.
cancel_learning() {
  local plug= trainer= bg rc=0 i
  inside timeout 600 "$CONSOLE" -i --batch-interpreter=plug-in-script-fu-eval -b "
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE \"$TI/data/scene.png\")))
       (layer (vector-ref (car (gimp-image-get-layers image)) 0)))
  (plug-in-pie-learn-scene #:run-mode RUN-NONINTERACTIVE #:image image #:drawables (vector layer)
                           #:name \"cancelled\" #:preset \"quick\" #:steps $RESUME_STEPS #:device \"cpu\"))" --quit \
    >"$T/out/cancel.log" 2>&1 &
  bg=$!
  for i in $(seq 1 300); do
    plug=$(pgrep -f "^$HI/.config/GIMP/$MM/plug-ins/pie/pie " | head -n1 || true)
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
RESUME_STEPS=400
timed cancel_learning
check "the cancelled Learn Scene left a resumable checkpoint" test -f "$H/.local/share/pie/.checkpoints/cancelled/state.pt"
# Learn Scene again under the same name: "Continue a stopped run" (TRUE by default) continues it.
resume_learning() {
  inside timeout 600 "$CONSOLE" -i --batch-interpreter=plug-in-script-fu-eval -b "
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
forget() { inside timeout 300 "$CONSOLE" -i --batch-interpreter=plug-in-script-fu-eval -b "$(sf_forget "$1")" --quit \
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
