"""A randomly initialised checkpoint with Stable Diffusion 1.5's (or SDXL's) shapes, in diffusers layout.

The GPU benchmark's model (bench/sd_gpu/README.md): UNet2DConditionModel with SD 1.5's blocks,
cross_attention_dim 768 and attention_head_dim 8; the SD VAE (128/256/512/512, scaling 0.18215);
a CLIP ViT-L/14-shaped text encoder (hidden 768, 12 layers, 12 heads, 77 positions, 49408 ids).
Speed does not depend on the weights, so nothing is downloaded: everything is built from
configs. The tokenizer is the trainer's small CLIP-style BPE (pie_trainer.sd.tiny); its ids fit
the 49408-row embedding, and tokenizing a prompt costs the same order of time.

With `--arch sdxl`: SDXL 1.0 base's shapes (UNet blocks 320/640/1280 with 1, 2 and 10 transformer
layers, cross_attention_dim 2048, the "text_time" added conditioning; the SDXL VAE, scaling 0.13025;
CLIP ViT-L/14 and OpenCLIP ViT-bigG/14-shaped text encoders, hidden 768 and 1280, projection 1280),
saved in float16 (about 7 GB; built on the GPU where there is one, which is much faster).

    PYTHONPATH=trainer python bench/sd_gpu/checkpoint.py OUT_DIR [--seed 0] [--arch sd15|sdxl]
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


UNET_XL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
               block_out_channels=(320, 640, 1280),
               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
               transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
               use_linear_projection=True, cross_attention_dim=2048, addition_embed_type="text_time",
               addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
VAE_XL = {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
TEXT_2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
              num_attention_heads=20, max_position_embeddings=MAX_LENGTH, projection_dim=1280, hidden_act="gelu")


def build_xl(out: Path, seed: int) -> Path:
    offline()
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pie_trainer.sdxl.tiny import MODEL_INDEX, SCHEDULER_CONFIG, write_tokenizer_2

    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out / "tokenizer")
    write_tokenizer_2(out / "tokenizer_2")
    ids = dict(bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    with torch.device(device):
        parts = {"unet": UNet2DConditionModel(**UNET_XL), "vae": AutoencoderKL(**VAE_XL),
                 "text_encoder": CLIPTextModel(CLIPTextConfig(**TEXT, **ids)),
                 "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_2, **ids))}
    for name, model in parts.items():
        model.to(torch.float16).save_pretrained(out / name)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
    index = {k: v for k, v in MODEL_INDEX.items() if k != "_pie_tiny"}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


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
    ap.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15", help="whose shapes (default sd15)")
    a = ap.parse_args(argv)
    print((build_xl if a.arch == "sdxl" else build)(a.out, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
