#!/usr/bin/env bash
# The whole test suite (README's test command; .ci/run calls exactly this).
# Sets up everything it needs first (cached under ${PIE_CACHE:-~/.cache/pie}),
# then runs: the lint gate (build/lint.sh), the engine's Rust tests, the trainer's pytest suite, the
# command-line end-to-end tests, and the GIMP plug-in tests on GIMP 3.2 (the
# whole suite) and GIMP 3.0 (end to end and dialogs), each in its own host.
# PIE_SKIP_GIMP=1 leaves out the GIMP 3 hosts and their tests (they need root).
source "$(dirname "$0")/../build/common.sh"
cd "$PIE_ROOT"

declare -a timings=()
failed=()
LOGS=$(mktemp -d /tmp/pie-test-logs.XXXXXX)
nlog=0
timed() { # timed NAME CMD...: run a phase, record its time, keep going on failure
  local name=$1; shift
  local t0=$SECONDS rc=0
  nlog=$((nlog + 1))
  printf '\n==== %s\n' "$name"
  # Not a pipeline: set-up phases export variables into this shell.
  "$@" > >(tee "$LOGS/$nlog.log") 2>&1 || rc=$?
  wait $! 2>/dev/null || true   # let tee finish writing the log
  timings+=("$(printf '%-34s %5d s  %s' "$name" $((SECONDS - t0)) "$([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)")")")
  [ $rc = 0 ] || failed+=("$name")
  return 0
}
summary() {
  printf '\n==== phases\n'
  printf '%s\n' "${timings[@]}"
  printf '%-34s %5d s\n' "total" "$SECONDS"
  # One closing count over every runner: cargo's "test result" lines, pytest's
  # last summary line and the GIMP tests' "N passed, M failed".
  python3 - "$LOGS" <<'PY'
import pathlib, re, sys
passed = failed = 0
for log in sorted(pathlib.Path(sys.argv[1]).glob("*.log")):
    text = log.read_text(errors="replace")
    cargo = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", text)
    if cargo:
        passed += sum(int(p) for p, _ in cargo); failed += sum(int(f) for _, f in cargo)
        continue
    lines = [l for l in text.splitlines() if re.search(r"\d+ (passed|failed)", l)]
    if lines:
        last = lines[-1]
        count = lambda word: sum(int(n) for n in re.findall(r"(\d+) " + word, last))
        passed += count("passed"); failed += count("failed") + count("errors?")
print(f"{passed} passed, {failed} failed")
PY
  rm -rf "$LOGS"
}
trap summary EXIT

setup_ort()     { ORT_DYLIB_PATH=$(bash build/onnxruntime.sh cpu); export ORT_DYLIB_PATH; }
setup_trainer() { PIE_TRAINER_PYTHON=$(bash build/trainer-env.sh); export PIE_TRAINER_PYTHON; }
setup_eval()    { PIE_EVAL_PYTHON=$(bash build/eval-env.sh); export PIE_EVAL_PYTHON; }
setup_lint()    { PIE_LINT_PYTHON=$(bash build/lint-env.sh); export PIE_LINT_PYTHON; }
setup_clip()    { bash build/clip-vocab.sh >/dev/null; }
setup_gimp()    { bash build/gimp-host.sh "$1" >/dev/null && echo "GIMP $(bash build/gimp-host.sh "$1" version)"; }
cargo_fetch()   { run_step "cargo fetch (crates.io)" cargo fetch --locked; }

timed "set-up: ONNX Runtime library" setup_ort
timed "set-up: trainer environment" setup_trainer
timed "set-up: evaluation environment" setup_eval
timed "set-up: Python lint tools" setup_lint
timed "set-up: CLIP vocabulary (PyPI)" setup_clip
if [ "${PIE_SKIP_GIMP:-0}" != 1 ]; then
  timed "set-up: GIMP 3.0 host (trixie)" setup_gimp 3.0
  timed "set-up: GIMP 3.2 host (sid)" setup_gimp 3.2
fi
timed "set-up: cargo fetch" cargo_fetch
if [ ${#failed[@]} -gt 0 ]; then
  die "set-up failed (${failed[*]}); no test was run"
fi

export PIE_TRAINER_PATH=$PIE_ROOT/trainer
# Nothing a test does may touch the user's own library or GIMP profile.
export PIE_HOME=$(mktemp -d /tmp/pie-test-home.XXXXXX)
trap 'summary; rm -rf "$PIE_HOME"' EXIT

timed "lint: rustfmt, clippy, ruff, mypy" bash build/lint.sh
timed "engine: cargo test (release)" cargo test --release -p pie-engine
timed "trainer: pytest" "$PIE_TRAINER_PYTHON" -m pytest -q trainer/tests
timed "evaluation: pytest" "$PIE_EVAL_PYTHON" -m pytest -q tests/eval
if [ "${PIE_SKIP_GIMP:-0}" != 1 ]; then
  timed "GIMP 3.2 plug-in: whole suite" bash tests/gimp/run.sh 3.2
  timed "GIMP 3.0 plug-in: e2e, dialogs" bash tests/gimp/run.sh 3.0
fi
[ "${PIE_SKIP_GIMP:-0}" = 1 ] || { bash build/gimp-host.sh 3.0 umount; bash build/gimp-host.sh 3.2 umount; }

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED phases: ${failed[*]}"
  exit 1
fi
echo "all test phases passed"
