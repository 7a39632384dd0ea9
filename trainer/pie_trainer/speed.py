"""Choosing how to run fast on the machine at hand: threads, precision, device.

- threads: default max(1, cores - 1); never all cores next to GIMP, because
  oversubscribed OpenMP collapses throughput more than tenfold
  (notes/training.md). `RateWatcher` drops a thread when the rate collapses.
- precision: a few timed steps per mode (fp32; bf16 autocast + channels_last)
  at start-up, on a throwaway copy of the model, keeping the faster one.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from typing import Callable

import torch
from torch import nn

MODES = ("fp32", "bf16")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    return max(1, available_cores() - 1)


def resolve_device(requested: str) -> torch.device:
    from .errors import BadInput
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for but PyTorch sees no usable CUDA device")
    return torch.device(requested)


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager[object]:
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(mode: str) -> torch.memory_format:
    return torch.channels_last if mode == "bf16" else torch.contiguous_format


def bf16_usable(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return True


def time_modes(
    model: nn.Module,
    make_inputs: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device,
    modes: tuple[str, ...],
    steps: int,
    warmup: int = 2,
) -> dict[str, float]:
    """Steps/s of forward + backward + AdamW for each mode, on a copy of the model."""
    rates: dict[str, float] = {}
    for mode in modes:
        m = copy.deepcopy(model).to(device).to(memory_format=memory_format(mode))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        x, t, tok = make_inputs()
        x = x.to(device).to(memory_format=memory_format(mode))
        t, tok = t.to(device), tok.to(device)
        start = 0.0
        for i in range(warmup + steps):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            with autocast(device, mode):
                loss = (m(x, t, tok).float() - x).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        rates[mode] = steps / max(time.perf_counter() - start, 1e-9)
        del m, opt
    return rates


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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

