"""Resumable checkpoints (`<library>/.checkpoints/<name>/`): their file names and atomic writes.

Every file is written to a temporary name, fsynced and renamed, so a kill at
any moment leaves either the previous complete file or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .library import LibraryFileError, open_library_file

STATE = "state.pt"   # everything a resumed run needs (torch.save of a dict)
META = "meta.json"   # the run's identity and its concept identifier, readable without torch


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode("utf-8")))


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in model.state_dict().items()}


def load_state(folder: Path, library: Path) -> dict[str, Any]:
    """A checkpoint's state.pt: a regular file inside the library (a FIFO there must not hang us)."""
    try:
        f = open_library_file(folder / STATE, library)
    except LibraryFileError as exc:
        raise LibraryFileError(f"the checkpoint cannot be resumed: {exc}") from None
    with f:
        return torch.load(f, map_location="cpu", weights_only=True)
