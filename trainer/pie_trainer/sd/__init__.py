"""The `sd` backbone: DreamBooth / LoRA fine-tuning of a local Stable Diffusion
checkpoint (diffusers layout), exported as text encoder, UNet and VAE graphs.

Nothing in this package is imported unless `--backbone sd` is used (or
`python -m pie_trainer.sd.tiny`): diffusers, transformers and peft load only
here, and only after `offline()` has switched every hub access off.
"""

from __future__ import annotations

import os

NAME = "sd"
WEIGHTS = "weights.safetensors"   # what training changed, relative to the base (sd/models.py)
TOKENIZER = "tokenizer.json"

_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


def offline() -> None:
    """Switch the Hugging Face libraries to local-only, quiet operation. Call before importing them."""
    for k, v in _OFFLINE.items():
        os.environ[k] = v
