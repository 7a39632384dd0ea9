"""The exceptions the CLI turns into exit codes (schema/README.md)."""

from __future__ import annotations

import errno

EXIT_DONE = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 3


class BadInput(Exception):
    """Something the user gave cannot be used: `error` event, kind bad_input, exit 2."""


class Cancelled(Exception):
    """Stopped by SIGINT/SIGTERM after a resumable checkpoint was written: exit 3."""

    def __init__(self, stage: int, step: int, checkpoint: str) -> None:
        super().__init__(f"cancelled at step {step}")
        self.stage = stage
        self.step = step
        self.checkpoint = checkpoint


def is_disk_full(exc: BaseException) -> bool:
    """True for the OSErrors a full disk or an exhausted quota raise."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
