"""Resumable checkpoints (`<library>/.checkpoints/<name>/`) and EMA weight files.

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
from .model import TinyUNet, UNetConfig

STATE = "state.pt"
WEIGHTS = "weights.pt"
META = "meta.json"
WEIGHTS_FORMAT = "pie-pixel-unet-weights"


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


def weights_payload(ema: nn.Module, config: UNetConfig, info: dict[str, Any]) -> dict[str, Any]:
    """What weights.pt holds: the EMA denoiser's fp32 state and what is needed to rebuild and sample it."""
    return {"format": WEIGHTS_FORMAT, "version": 1, "config": config.to_dict(), "info": info,
            "state_dict": cpu_state(ema)}


def load_weights(path: Path, library: Path | None = None) -> tuple[TinyUNet, dict[str, Any]]:
    """The EMA model of a weights.pt; a file of the library (`library` given) is opened with its checks."""
    if library is None:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    else:
        with open_library_file(path, library) as f:
            payload = torch.load(f, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a pie weights file")
    model = TinyUNet(UNetConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), dict(payload.get("info") or {})


def load_state(folder: Path, library: Path) -> dict[str, Any]:
    """A checkpoint's state.pt: a regular file inside the library (a FIFO there must not hang us)."""
    try:
        f = open_library_file(folder / STATE, library)
    except LibraryFileError as exc:
        raise LibraryFileError(f"the checkpoint cannot be resumed: {exc}") from None
    with f:
        return torch.load(f, map_location="cpu", weights_only=True)
