#!/usr/bin/env bash
# The lint gate (a phase of tests/run.sh): rustfmt and clippy for both crates;
# ruff and mypy for the Python (the trainer with its tests and
# benchmark, the evaluation scripts, bench/). Every check runs, and the exit
# status is non-zero if any of them found something.
# PIE_SKIP_GIMP=1 leaves out the plug-in's clippy (it builds in the GIMP 3 host).
# The Python tools come from build/lint-env.sh; mypy checks each script against
# the environment it runs in (build/trainer-env.sh, build/eval-env.sh), all three
# cached (PIE_LINT_PYTHON, PIE_TRAINER_PYTHON and PIE_EVAL_PYTHON, when set, are used as they are).
source "$(dirname "$0")/common.sh"
cd "$PIE_ROOT"

found=()
lint() { # lint NAME FIX CMD...
  local name=$1 fix=$2; shift 2
  log "$name"
  "$@" || found+=("$name (to fix: $fix)")
}

lint "rustfmt" "cargo fmt --all" cargo fmt --all --check
lint "clippy, engine" "the warnings above" \
  nice cargo clippy --locked --release -p pie-engine --all-targets -- -D warnings
if [ "${PIE_SKIP_GIMP:-0}" != 1 ]; then
  host_dir=$(host_target) || die "cannot prepare the GIMP 3 host's build folder"
  lint "clippy, plug-in (in the GIMP 3 host)" "the warnings above" \
    nice bash build/gimp-host.sh run env CARGO_TARGET_DIR="$host_dir" \
    cargo clippy --offline --release -p pie-gimp --all-targets -- -D warnings
fi

# Python: settings in ruff.toml and mypy.ini at the repository's root.
py=${PIE_LINT_PYTHON:-$(bash build/lint-env.sh)} || die "cannot set up the Python lint tools (build/lint-env.sh)"
trainer_py=${PIE_TRAINER_PYTHON:-$(bash build/trainer-env.sh)} || die "cannot set up the trainer's environment"
eval_py=${PIE_EVAL_PYTHON:-$(bash build/eval-env.sh)} || die "cannot set up the evaluation's environment"
trees=(trainer tests/eval bench)
lint "ruff" "the findings above; '$py -m ruff check --fix ${trees[*]}' fixes some" \
  "$py" -m ruff check --no-cache "${trees[@]}"
# Run with the trainer's python: the package, its tests and benchmark, and the benchmarks that import it.
lint "mypy, trainer" "the errors above" nice "$py" -m mypy --config-file mypy.ini --python-executable "$trainer_py" \
  --cache-dir target/mypy-trainer trainer/pie_trainer trainer/tests trainer/bench \
  bench/add_vs_torch.py bench/add_scaling.py bench/common.py bench/sd_gpu
# Run with the evaluation's python (OpenCV, scikit-image).
lint "mypy, evaluation" "the errors above" nice "$py" -m mypy --config-file mypy.ini --python-executable "$eval_py" \
  --cache-dir target/mypy-eval tests/eval bench/train_time.py bench/common.py

if [ ${#found[@]} -gt 0 ]; then
  printf '[pie lint] found something: %s\n' "${found[@]}" >&2
  exit 1
fi
log "all lints clean"
