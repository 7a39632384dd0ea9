"""The progress stream, version 1: one JSON object per line on stdout, nothing else.

See schema/README.md and schema/progress.schema.json. `claim_stdout` moves the
process's file descriptor 1 onto stderr so that nothing else (a library's
print, a C warning) can ever reach the stream; events go to a private copy.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import IO, Any

PROTOCOL_VERSION = 1


def claim_stdout() -> IO[str]:
    """Return a private text stream on the real stdout and point fd 1 at stderr."""
    sys.stdout.flush()
    private_fd = os.dup(1)
    os.dup2(2, 1)
    stream = os.fdopen(private_fd, "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr
    return stream


class Progress:
    """Writes protocol events; throttles `progress` to a few per second."""

    def __init__(self, stream: IO[str] | None, min_interval_s: float = 0.25) -> None:
        self._stream = stream
        self._min_interval_s = min_interval_s
        self._last_progress = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        if self._stream is None:
            return
        record: dict[str, Any] = {"v": PROTOCOL_VERSION, "event": event}
        for key, value in fields.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = 0.0
            record[key] = value
        try:
            self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            # The reader went away; training goes on, quietly.
            self._stream = None

    def phase(self, stage: int, phase: str, message: str) -> None:
        self.emit("phase", stage=stage, phase=phase, message=message)
        log(message)

    def progress(self, stage: int, step: int, total: int, loss: float, rate: float, force: bool = False,
                 budget: tuple[float, float] | None = None) -> None:
        """`budget`: (seconds used, budget in seconds) of a run with --minutes; the events then
        carry both, and the time left is the budget's when that is the sooner end."""
        now = time.monotonic()
        if not force and now - self._last_progress < self._min_interval_s:
            return
        self._last_progress = now
        eta = (total - step) / rate if rate > 0 else 0.0
        extra: dict[str, Any] = {}
        if budget is not None:
            used, budget_s = budget
            eta = min(eta, budget_s - used) if rate > 0 else budget_s - used
            extra = {"elapsed_s": round(max(used, 0.0), 1), "budget_s": round(budget_s, 1)}
        self.emit("progress", stage=stage, step=step, total=total, loss=round(float(loss), 6),
                  rate=round(max(rate, 0.0), 4), eta_s=round(max(eta, 0.0), 1), **extra)


def log(message: str) -> None:
    """A diagnostic line for people: stderr, never the stream. When nobody reads
    stderr any more (the engine was killed: GIMP's cancel), the line is dropped and
    the standard streams go to /dev/null, so that stopping can still write its
    checkpoint instead of dying of a broken pipe."""
    try:
        print(f"pie-trainer: {message}", file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        detach_std_streams()


def detach_std_streams() -> None:
    """Point file descriptors 1 and 2 at /dev/null: their reader is gone, and any
    later write there (ours, a library's, Python's own at exit) must not fail."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(null, fd)
    finally:
        os.close(null)
