"""Training settings and the presets (default and --quick) for each stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Steps per stage. Default: a usable scene in about 8 minutes and a usable subject
# in about 5 on a 2-core CPU with native bf16; quick: about a minute per stage.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "scene": {
        "default": {"steps": 2000, "batch": 8, "lr": 5e-4, "resolution": 64},
        "quick": {"steps": 400, "batch": 8, "lr": 1e-3, "resolution": 32},
    },
    "subject": {
        "default": {"steps": 1200, "batch": 8, "lr": 2.5e-4},
        "quick": {"steps": 250, "batch": 8, "lr": 5e-4},
    },
}


@dataclass
class Settings:
    stage: int
    steps: int
    batch: int
    lr: float
    resolution: int
    scene_short_side: int
    base_channels: int = 32
    seed: int = 0
    null_prob: float = 0.1
    replay: float = 0.5          # Stage II: fraction of each batch that replays the scene
    ema_max: float = 0.999
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    preview_every: int = 250
    checkpoint_every: int = 500
    preset: str = "default"
    # The defaults below keep the constant learning rate and the plain loss the presets began with.
    lr_schedule: str = "constant"  # or "cosine": linear warm-up, then a cosine down to lr_min of lr
    warmup: float = 0.0            # fraction of the run the cosine schedule warms up over
    lr_min: float = 0.0            # the cosine's floor, as a fraction of lr
    min_snr: float = 0.0           # gamma of min-SNR loss weighting (0: off)
    coarse: float = 0.0            # Stage I: fraction of the run on crops of coarse_resolution first
    coarse_resolution: int = 0     # 0: half the resolution

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
