#!/usr/bin/env bash
# The evaluation's Python environment (tests/eval/requirements.txt: OpenCV,
# scikit-image, ...), cached at $PIE_CACHE/eval-venv-<hash>. Prints its python.
exec bash "$(dirname "$0")/python-env.sh" eval-venv "$(dirname "$0")/../tests/eval/requirements.txt" \
  800 "cv2, skimage, numpy, PIL"
