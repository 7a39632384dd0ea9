#!/usr/bin/env bash
# Runs inside the GIMP 3 host under xvfb-run (tests/gimp/run.sh starts it):
# starts GIMP 3 with tests/gimp/gui.py as a Python-Fu batch, confirms the Add
# Subject dialog with Return (after a screenshot), presses Ctrl+Z in the image
# window when gui.py asks, cancels the Learn dialogs, confirms Forget Concept's,
# and waits for GIMP to quit. The checks are in run.sh.
set -u
OUT=$PIE_TEST_DIR/out
mkdir -p "$OUT"
log() { echo "[gui.sh] $*"; }
wait_file() { # wait_file FILE SECONDS
  local i=0
  while [ ! -e "$1" ] && [ $i -lt $(($2 * 5)) ]; do sleep 0.2; i=$((i + 1)); done
  [ -e "$1" ]
}
find_window() { # find_window TITLE TRIES DELAY: the first visible window whose title matches, or nothing
  local w= _
  for _ in $(seq 1 "$2"); do
    w=$(xdotool search --onlyvisible --name "$1" 2>/dev/null | head -n1)
    [ -n "$w" ] && break
    sleep "$3"
  done
  printf '%s' "$w"
}
focus() { # give a window the keyboard; Xvfb has no window manager
  xdotool windowfocus --sync "$1" 2>/dev/null || xdotool windowactivate --sync "$1" 2>/dev/null || true
}
escape() { # escape WINDOW TITLE: press Escape until the dialog is gone (a loaded machine may drop the first)
  local _
  for _ in 1 2 3 4 5; do
    focus "$1"
    xdotool key --window "$1" Escape
    sleep 1
    xdotool search --onlyvisible --name "$2" >/dev/null 2>&1 || return 0
    log "the $2 dialog is still open after Escape (focus: '$(xdotool getwindowfocus getwindowname 2>/dev/null)'): pressing it again"
    import -window root "$OUT/escape-retry-$(echo "$2" | tr ' ' '-').png"
  done
  return 1
}

"${PIE_TEST_GIMP:-gimp-3.0}" --no-splash --batch-interpreter=python-fu-eval \
  -b "exec(open('/pie/tests/gimp/gui.py').read())" --quit >"$OUT/gui-gimp.log" 2>&1 &
gimp_pid=$!

if wait_file "$OUT/dialog-expected" 180; then
  dialog=$(find_window 'Add Subject' 150 0.4)
  if [ -n "$dialog" ]; then
    sleep 1.5   # let it draw
    import -window root "$OUT/add-subject-dialog.png"
    xdotool getwindowname "$dialog" >"$OUT/dialog-title.txt"
    focus "$dialog"
    xdotool key --window "$dialog" Return
    log "dialog '$(cat "$OUT/dialog-title.txt")' confirmed"
  else
    import -window root "$OUT/no-dialog.png"
    log "no Add Subject dialog appeared"
  fi
else
  log "gui.py never reached the dialog"
fi

if wait_file "$OUT/undo-ready" 400; then
  win=$(xdotool search --onlyvisible --name 'scene.*GIMP' 2>/dev/null | head -n1)
  [ -n "$win" ] || win=$(xdotool search --onlyvisible --name 'GIMP' 2>/dev/null | head -n1)
  if [ -n "$win" ]; then
    focus "$win"
    xdotool key --clearmodifiers ctrl+z
    log "Ctrl+Z sent to '$(xdotool getwindowname "$win")'"
    sleep 2
    import -window root "$OUT/after-undo.png"
  else
    log "no image window found"
  fi
fi

# The three dialogs gui.py opens after the Adds: each is waited for, screenshot,
# then cancelled with Escape or, for Forget Concept, confirmed with Return.
dialog_step() { # dialog_step MARKER TITLE SCREENSHOT cancel|confirm
  wait_file "$OUT/$1" 120 || return 0
  local dialog
  dialog=$(find_window "$2" 100 0.3)
  if [ -z "$dialog" ]; then log "no $2 dialog appeared"; return 0; fi
  sleep 1.5
  import -window root "$OUT/$3"
  if [ "$4" = confirm ]; then
    focus "$dialog"
    xdotool key --window "$dialog" Return
    log "$2 dialog confirmed"
  elif escape "$dialog" "$2"; then log "$2 dialog cancelled"
  else log "the $2 dialog did not close"; fi
}
dialog_step learn-dialog-expected 'Learn Subject' learn-subject-dialog.png cancel
dialog_step learn-scene-dialog-expected 'Learn Scene' learn-scene-dialog.png cancel
dialog_step forget-dialog-expected 'Forget Concept' forget-concept-dialog.png confirm

if wait_file "$OUT/learning" 120; then
  # a wider window, so that the status bar has room for the progress text
  win=$(xdotool search --onlyvisible --name 'GIMP' 2>/dev/null | head -n1)
  [ -n "$win" ] && xdotool windowmove "$win" 0 0 windowsize "$win" 1280 900 2>/dev/null
  sleep 12   # past the trainer's start-up, into the steps
  import -window root "$OUT/learning-progress.png"
  log "screenshot of the progress while learning"
fi

wait_file "$OUT/gui-finished" 300 || log "gui.py did not finish"
for _ in $(seq 1 60); do kill -0 "$gimp_pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$gimp_pid" 2>/dev/null; then
  log "GIMP did not quit; stopping it"
  kill "$gimp_pid" 2>/dev/null
fi
wait "$gimp_pid" 2>/dev/null
exit 0
