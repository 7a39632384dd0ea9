"""`python -m pie_trainer.sd.tiny OUT_DIR [--inpainting] [--seed N]`: a tiny, randomly
initialised Stable-Diffusion-architecture checkpoint in diffusers layout.

It stands in for real SD weights in tests (the trainer's and the engine's): the
same classes and folder layout as SD 1.x (model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/), a few hundred thousand parameters each.
The tokenizer is a real CLIP-style byte-level BPE (vocab.json + merges.txt)
with a small vocabulary: every byte and byte + "</w>", merges for a few common
words, <|startoftext|> and <|endoftext|>. Any lowercase identifier is
tokenizable (at worst letter by letter). Same seed, same files.

Sizes (notes/training.md): UNet blocks (32, 64), cross_attention_dim 32; VAE
blocks (32, 64) (so vae_scale_factor 2, not SD's 8); CLIP text encoder hidden 32,
2 layers, max_length 77; DDPMScheduler scaled_linear 0.00085..0.012, steps_offset 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import offline

WORDS = ("a", "photo", "of", "in", "the", "scene", "object", "dog", "cat", "backpack", "person", "on",
         "and", "with", "picture", "image", "landscape", "mountains", "lake", "room", "toy")
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def bpe_vocab(words: tuple[str, ...] = WORDS) -> tuple[dict[str, int], list[str]]:
    """CLIP's layout: 256 byte symbols, the same + '</w>', then one token per merge, then the specials."""
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    seen = set(vocab_list)
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        # Merge left to right: ((p h) o) t ... so each merge's pieces exist before it.
        cur = parts[0]
        for nxt in parts[1:]:
            m = f"{cur} {nxt}"
            cur = cur + nxt
            if cur not in seen:
                merges.append(m)
                vocab_list.append(cur)
                seen.add(cur)
    vocab_list += [BOS, EOS]
    return {t: i for i, t in enumerate(vocab_list)}, merges


def write_tokenizer(folder: Path) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = bpe_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, indent=2), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "bos_token": BOS, "eos_token": EOS,
         "pad_token": EOS, "unk_token": EOS, "do_lower_case": True, "clean_up_tokenization_spaces": True},
        indent=2), encoding="utf-8")
    return vocab


def unet_kwargs(inpainting: bool) -> dict[str, Any]:
    return {"sample_size": 32, "in_channels": 9 if inpainting else 4, "out_channels": 4, "layers_per_block": 1,
            "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 32,
            "attention_head_dim": 8, "norm_num_groups": 8}


VAE_KWARGS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2, "block_out_channels": (32, 64), "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 8, "sample_size": 64}
SCHEDULER_KWARGS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "steps_offset": 1, "clip_sample": False}


def text_kwargs(vocab: dict[str, int]) -> dict[str, Any]:
    return {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": MAX_LENGTH, "bos_token_id": vocab[BOS],
            "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS], "projection_dim": 32}


def model_index(inpainting: bool) -> dict[str, Any]:
    pipeline = "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline"
    return {
        "_class_name": pipeline, "_diffusers_version": "0.42.1", "_pie_tiny": True,
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def write_configs(out: Path, inpainting: bool = False) -> Path:
    """The tiny checkpoint's folder without its weights: every config and the tokenizer (what a
    single-file checkpoint of this architecture needs beside it to be converted, sd/single_file.py)."""
    offline()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out / "tokenizer")
    _save_config(UNet2DConditionModel, unet_kwargs(inpainting), out / "unet")
    _save_config(AutoencoderKL, VAE_KWARGS, out / "vae")
    CLIPTextConfig(**text_kwargs(vocab), architectures=["CLIPTextModel"]).save_pretrained(out / "text_encoder")
    DDPMScheduler(**SCHEDULER_KWARGS).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps(model_index(inpainting), indent=2) + "\n", encoding="utf-8")
    return out


def _save_config(cls: Any, kwargs: dict[str, Any], folder: Path) -> None:
    """A diffusers model's config.json as save_pretrained writes it, without building the model."""
    import torch
    with torch.device("meta"):
        cls(**kwargs).save_config(folder)


def build(out: Path, inpainting: bool = False, seed: int = 0) -> Path:
    offline()
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_kwargs(inpainting))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE_KWARGS)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_kwargs(vocab)))
    scheduler = DDPMScheduler(**SCHEDULER_KWARGS)
    unet.save_pretrained(out / "unet")
    vae.save_pretrained(out / "vae")
    text_encoder.save_pretrained(out / "text_encoder")
    scheduler.save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps(model_index(inpainting), indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pie_trainer.sd.tiny",
                                description="write a tiny random SD-architecture checkpoint (diffusers layout)")
    p.add_argument("out", help="folder to write (created; files in it are overwritten)")
    p.add_argument("--inpainting", action="store_true", help="a 9-channel inpainting UNet")
    p.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    a = p.parse_args(argv)
    build(Path(a.out), a.inpainting, a.seed)
    print(f"wrote a tiny SD checkpoint to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
