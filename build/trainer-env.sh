#!/usr/bin/env bash
# The trainer's Python environment: PyTorch and the trainer's dependencies
# (trainer/requirements.txt), cached at $PIE_CACHE/venv-<hash>. The trainer
# itself is not installed into it: tests run the clone's code through
# PIE_TRAINER_PATH, and install.sh installs a copy for users. Prints its python.
exec bash "$(dirname "$0")/python-env.sh" venv "$(dirname "$0")/../trainer/requirements.txt" \
  7000 "torch, onnx, onnxruntime, numpy, PIL, jsonschema"
