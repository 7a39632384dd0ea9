"""--resume: finding the checkpoint of a stopped run and checking that it is this run's.

A resumed run keeps what it began with: its settings (whatever the command line
says now) and its concept identifier.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoint import STATE, load_state
from .errors import BadInput
from .library import IDENTIFIER_RE, checkpoint_dir, read_checkpoint_meta


def open_checkpoint(library: Path, name: str, stage: int, backbone: str | None) -> dict[str, Any]:
    """The state of the run `name` was stopped in. `backbone` is what that backbone's state records
    under "backbone" (None where it records nothing)."""
    folder = checkpoint_dir(library, name)
    if not os.path.lexists(folder / STATE):
        raise BadInput(f"there is no checkpoint to resume for {name!r} (looked in {folder})")
    saved = load_state(folder, library)
    settings = saved.get("settings") if isinstance(saved, dict) else None
    if not isinstance(settings, dict) or saved.get("backbone") != backbone:
        raise different_run(folder)
    if settings.get("stage") != stage:
        raise BadInput(f"the checkpoint for {name!r} is of stage {settings.get('stage')}, not {stage}")
    return saved


def check_same_run(saved: dict[str, Any], meta: dict[str, Any], folder: Path) -> None:
    """The checkpoint's identity (stage, sources, parent, base) must be this run's."""
    if (saved.get("extra") or {}).get("meta") != meta:
        raise different_run(folder)


def different_run(folder: Path) -> BadInput:
    return BadInput(f"the checkpoint in {folder} belongs to a different run (other backbone, stage, image, "
                    "scene, mask or base); start again without --resume")


def kept_identifier(library: Path, name: str) -> str | None:
    """The identifier the stopped run `name` chose when it began, if its checkpoint records a valid one."""
    ident = (read_checkpoint_meta(library, name) or {}).get("identifier")
    return ident if isinstance(ident, str) and IDENTIFIER_RE.match(ident) else None
