"""A randomly initialised checkpoint with Stable Diffusion 1.5's shapes, in diffusers layout.

The GPU benchmark's model (bench/sd_gpu/README.md): UNet2DConditionModel with SD 1.5's blocks,
cross_attention_dim 768 and attention_head_dim 8; the SD VAE (128/256/512/512, scaling 0.18215);
a CLIP ViT-L/14-shaped text encoder (hidden 768, 12 layers, 12 heads, 77 positions, 49408 ids).
Speed does not depend on the weights, so nothing is downloaded: everything is built from
configs. The tokenizer is the trainer's small CLIP-style BPE (pie_trainer.sd.tiny); its ids fit
the 49408-row embedding, and tokenizing a prompt costs the same order of time.

    PYTHONPATH=trainer python bench/sd_gpu/checkpoint.py OUT_DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pie_trainer.sd import offline
from pie_trainer.sd.tiny import BOS, EOS, MAX_LENGTH, write_tokenizer

UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
           block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           scaling_factor=0.18215)
TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=MAX_LENGTH, projection_dim=768, hidden_act="quick_gelu")


def build(out: Path, seed: int) -> Path:
    offline()
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out / "tokenizer")
    torch.manual_seed(seed)
    UNet2DConditionModel(**UNET).save_pretrained(out / "unet")
    AutoencoderKL(**VAE).save_pretrained(out / "vae")
    CLIPTextModel(CLIPTextConfig(**TEXT, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
                                 pad_token_id=vocab[EOS])).save_pretrained(out / "text_encoder")
    DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write the checkpoint into (diffusers layout)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    a = ap.parse_args(argv)
    print(build(a.out, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
