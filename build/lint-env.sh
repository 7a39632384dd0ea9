#!/usr/bin/env bash
# The Python lint tools (build/lint-requirements.txt: ruff, mypy), cached at
# $PIE_CACHE/lint-venv-<hash>. Prints its python.
exec bash "$(dirname "$0")/python-env.sh" lint-venv "$(dirname "$0")/lint-requirements.txt" 150 "mypy, ruff"
