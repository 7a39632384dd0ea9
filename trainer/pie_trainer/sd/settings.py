"""The sd backbone's settings and presets (no torch here: the CLI reads them for --help)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# DreamBooth's usual numbers: LoRA lr 1e-4, full fine-tuning lr 2e-6 (diffusers'
# train_dreambooth*.py examples use 1e-4 / 5e-6 with 400-800 steps at batch 1).
SD_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "scene": {"default": {"steps": 400, "batch": 1}, "quick": {"steps": 100, "batch": 1}},
    "subject": {"default": {"steps": 800, "batch": 1}, "quick": {"steps": 200, "batch": 1}},
}
LR_LORA = 1e-4
LR_FULL = 2e-6
DEFAULT_LORA_RANK = 8
SCENE_CLASS = "scene"
SUBJECT_CLASS = "object"


@dataclass
class SdSettings:
    stage: int
    steps: int
    batch: int
    lr: float
    resolution: int
    class_word: str
    seed: int = 0
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: float = float(DEFAULT_LORA_RANK)
    train_text_encoder: bool = False
    mixed_precision: str = "no"          # resolved: no, fp16, bf16
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    grad_accum: int = 1
    prior_loss_weight: float = 1.0       # Stage II: weight of the replayed scene's loss
    caption_dropout: float = 0.0         # probability of the empty prompt (classifier-free guidance)
    scene_zoom: float = 1.25             # scene crops come from the scene at short side R .. zoom x R
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    checkpoint_every: int = 0
    export_precision: str = "auto"       # auto, fp32, fp16
    optimize: str = "auto"               # auto, on, off: fused CUDA graphs (sd/optimize.py)
    preview_steps: int = 15               # DDIM steps of the bundle's preview.png (0: none)
    preset: str = "default"
    backbone: str = "sd"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SdSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def prompt(identifier: str, class_word: str) -> str:
    return f"a photo of {identifier} {class_word}"
