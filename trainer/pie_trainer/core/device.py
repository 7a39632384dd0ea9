"""Where and on how many threads a run trains, for every backbone.

- threads: default max(1, cores - 1); never all cores next to GIMP, because
  oversubscribed OpenMP collapses throughput more than tenfold
  (notes/training.md). `RateWatcher` drops a thread when the rate collapses.
- device: auto = CUDA when PyTorch sees a GPU.
"""

from __future__ import annotations

import os

import torch

from .errors import BadInput
from .stop import StopFlag


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    return max(1, available_cores() - 1)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for but PyTorch sees no usable CUDA device")
    return torch.device(requested)


def start(requested: str, threads: int | None, deterministic: bool) -> tuple[StopFlag, torch.device, int]:
    """Set up a training run: SIGINT/SIGTERM stop it with a checkpoint, the device it runs on,
    PyTorch's threads (default `default_threads()`, one inter-op thread). With `deterministic`,
    the same seed on the same CUDA device gives the same weights (a small cost for a small net)."""
    # cuBLAS is only reproducible with a fixed workspace; it reads this when CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    stop = StopFlag()
    stop.install()
    device = resolve_device(requested)
    if deterministic and device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    n = threads or default_threads()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:   # already set (a second run in one process)
        pass
    return stop, device, n


class RateWatcher:
    """Watches the training rate over windows of steps; drops a CPU thread on collapse.

    A window slower than `collapse` x the best window seen so far, with more
    than one thread, sets one thread fewer (and restarts the reference).
    """

    def __init__(self, threads: int, device: torch.device, window: int = 20, collapse: float = 0.4) -> None:
        self.threads = threads
        self.device = device
        self.window = window
        self.collapse = collapse
        self.best = 0.0
        self._steps = 0
        self._busy = 0.0

    def add(self, step_seconds: float) -> str | None:
        """Record one training step's duration; returns a message when it changed threads."""
        self._steps += 1
        self._busy += step_seconds
        if self._steps < self.window:
            return None
        rate = self._steps / max(self._busy, 1e-9)
        self._steps, self._busy = 0, 0.0
        if self.device.type == "cpu" and self.threads > 1 and self.best > 0 and rate < self.collapse * self.best:
            best, self.best = self.best, 0.0
            self.threads -= 1
            torch.set_num_threads(self.threads)
            return f"rate collapsed to {rate:.2f} steps/s (best {best:.2f}); now using {self.threads} thread(s)"
        self.best = max(self.best, rate)
        return None

    @property
    def rate(self) -> float:
        return self.best
