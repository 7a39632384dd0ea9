"""weights.pt: the EMA denoiser's fp32 weights with what is needed to rebuild and
sample it; kept in every pixel-unet bundle and in its checkpoint folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint import cpu_state
from ..core.library import open_library_file
from .model import TinyUNet, UNetConfig

WEIGHTS = "weights.pt"
WEIGHTS_FORMAT = "pie-pixel-unet-weights"


def weights_payload(ema: TinyUNet, config: UNetConfig, info: dict[str, Any]) -> dict[str, Any]:
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
