"""`python -m pie_trainer.sdxl.tiny OUT_DIR [--seed N]`: a tiny, randomly initialised
Stable-Diffusion-XL-architecture checkpoint in diffusers layout.

It stands in for real SDXL weights in tests: SDXL's classes and folder layout
(model_index.json of a StableDiffusionXLPipeline with force_zeros_for_empty_prompt,
unet/, vae/, text_encoder/ (CLIPTextModel), text_encoder_2/ (CLIPTextModelWithProjection),
tokenizer/ and tokenizer_2/ (sd/tiny.py's CLIP BPE; the second pads with "!" as SDXL's
does), scheduler/ (EulerDiscreteScheduler, SDXL's config)), a few hundred thousand
parameters each. Same seed, same files.

Sizes: UNet blocks (32, 64), SDXL's added conditioning ("text_time", time embedding 8,
projection input 6 x 8 + P); text encoders of hidden size D1 = 32 and D2 = 48 (so the
concatenation's order matters), projection P = 24, cross_attention_dim D1 + D2 = 80;
VAE blocks (32, 64) (vae_scale_factor 2), SDXL's scaling factor 0.13025.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..sd import offline
from ..sd.tiny import BOS, EOS, MAX_LENGTH, VAE_KWARGS, write_tokenizer

D1, D2, P, TIME_DIM = 32, 48, 24, 8
PAD_2 = "!"

UNET_KWARGS: dict[str, Any] = {
    "sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": (32, 64), "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "cross_attention_dim": D1 + D2,
    "attention_head_dim": (2, 4), "transformer_layers_per_block": (1, 1), "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": TIME_DIM,
    "projection_class_embeddings_input_dim": 6 * TIME_DIM + P, "norm_num_groups": 8}
XL_VAE_KWARGS: dict[str, Any] = {**VAE_KWARGS, "scaling_factor": 0.13025, "force_upcast": True}
# SDXL 1.0 base's scheduler/scheduler_config.json, as it ships.
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
    "use_karras_sigmas": False}
MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1", "_pie_tiny": True,
    "force_zeros_for_empty_prompt": True, "feature_extractor": [None, None], "image_encoder": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}


def text_kwargs(vocab: dict[str, int], hidden: int, act: str) -> dict[str, Any]:
    return {"vocab_size": len(vocab), "hidden_size": hidden, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": MAX_LENGTH, "bos_token_id": vocab[BOS],
            "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS], "projection_dim": P, "hidden_act": act}


def write_tokenizer_2(folder: Path) -> dict[str, int]:
    """sd/tiny.py's tokenizer, padding with "!" like SDXL's second tokenizer."""
    vocab = write_tokenizer(folder)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = folder / name
        data = json.loads(f.read_text(encoding="utf-8"))
        data["pad_token"] = PAD_2
        f.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return vocab


def _write_common(out: Path) -> dict[str, int]:
    """Tokenizers, scheduler and model_index.json: what the folder holds beside its models."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out / "tokenizer")
    write_tokenizer_2(out / "tokenizer_2")
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n",
                                                             encoding="utf-8")
    (out / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n", encoding="utf-8")
    return vocab


def write_configs(out: Path) -> Path:
    """The tiny checkpoint's folder without its weights: every config and both tokenizers (what a
    single-file checkpoint of this architecture needs beside it to be converted, sd/single_file.py)."""
    offline()
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    vocab = _write_common(out)
    with torch.device("meta"):
        UNet2DConditionModel(**UNET_KWARGS).save_config(out / "unet")
        AutoencoderKL(**XL_VAE_KWARGS).save_config(out / "vae")
    CLIPTextConfig(**text_kwargs(vocab, D1, "quick_gelu"), architectures=["CLIPTextModel"]) \
        .save_pretrained(out / "text_encoder")
    CLIPTextConfig(**text_kwargs(vocab, D2, "gelu"), architectures=["CLIPTextModelWithProjection"]) \
        .save_pretrained(out / "text_encoder_2")
    return out


def build(out: Path, seed: int = 0) -> Path:
    offline()
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab = _write_common(out)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_KWARGS)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**XL_VAE_KWARGS)
    torch.manual_seed(seed + 2)
    te = CLIPTextModel(CLIPTextConfig(**text_kwargs(vocab, D1, "quick_gelu")))
    torch.manual_seed(seed + 3)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_kwargs(vocab, D2, "gelu")))
    unet.save_pretrained(out / "unet")
    vae.save_pretrained(out / "vae")
    te.save_pretrained(out / "text_encoder")
    te2.save_pretrained(out / "text_encoder_2")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pie_trainer.sdxl.tiny",
                                description="write a tiny random SDXL-architecture checkpoint (diffusers layout)")
    p.add_argument("out", help="folder to write (created; files in it are overwritten)")
    p.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    a = p.parse_args(argv)
    build(Path(a.out), a.seed)
    print(f"wrote a tiny SDXL checkpoint to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
