"""The `sdxl` backbone: DreamBooth LoRA on a local Stable Diffusion XL checkpoint (diffusers
layout), built on the sd backbone (sd/): the same run, LoRA, export and bundle, with SDXL's
two text encoders, pooled text embeddings and size/crop micro-conditioning (schema/README.md,
"Backbone sdxl").

As for sd, nothing here imports torch, diffusers or transformers until a run needs them,
and only after `pie_trainer.sd.offline()`.
"""

from __future__ import annotations

NAME = "sdxl"
DEFAULT_RESOLUTION = 1024
TIME_IDS = ["original_height", "original_width", "crop_top", "crop_left", "target_height", "target_width"]
