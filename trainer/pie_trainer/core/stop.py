"""Stopping a run with a checkpoint: SIGINT and SIGTERM, as the engine sends them."""

from __future__ import annotations

import os
import signal
import threading
import time

from .progress import detach_std_streams, log


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps (and inside previews).

    SIGINT is the engine's "stop with a checkpoint": the run stops at the next step,
    however long the current phase takes. SIGTERM stops the same way, but it must end
    the process even where nothing checks the flag (a phase that cannot be
    interrupted, a write to a pipe nobody reads any more): `term_grace_s` seconds
    after it the process exits with 128 + SIGTERM, finished or not. A SIGTERM after
    either signal exits at once, the same way; a second SIGINT changes nothing.
    """

    TERM_GRACE_S = 30.0

    def __init__(self, term_grace_s: float = TERM_GRACE_S) -> None:
        self.signum: int | None = None
        self._parent = os.getppid()
        self._term_grace_s = term_grace_s

    def install(self) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if os.getppid() != self._parent:
            # The engine died (its PDEATHSIG is this signal): nothing reads our
            # output any more, and a write to it must not stop the checkpoint.
            detach_std_streams()
        if self.signum is not None:
            if signum == signal.SIGINT:
                # The engine's stop and, when GIMP then ends the plug-in, its
                # death signal both arrive as SIGINT: the checkpoint must still be written.
                log("signal 2 received again: still stopping at the next step")
                return
            log(f"signal {signum} received again: exiting now")
            os._exit(128 + signum)
        log(f"signal {signum} received: stopping at the next step and writing a checkpoint")
        self.signum = signum
        if signum == signal.SIGTERM:
            threading.Thread(target=self._deadline, args=(signum,), name="pie-sigterm-deadline", daemon=True).start()

    def _deadline(self, signum: int) -> None:
        time.sleep(self._term_grace_s)
        log(f"still running {self._term_grace_s:g} s after signal {signum}: exiting now")
        os._exit(128 + signum)

    def __call__(self) -> bool:
        return self.signum is not None
