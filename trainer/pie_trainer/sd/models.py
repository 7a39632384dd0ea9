"""Loading the base checkpoint, LoRA adapters, and the fine-tuned weights file.

`weights.safetensors` (a file of every sd bundle) holds what training changed,
relative to the base checkpoint: with LoRA the adapter matrices (a few MB),
with full fine-tuning the whole UNet (and text encoder when it was trained).
base + weights.safetensors rebuilds the fine-tuned model exactly; Stage II
continues from it, and export always goes through that same rebuild, so what
is exported is what a later stage would start from.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import offline
from .base import Base

offline()

WEIGHTS_FORMAT = "pie-sd-weights"
UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class Tuning:
    """What is trained and how; recorded in weights.safetensors' metadata."""
    lora_rank: int            # 0 = full fine-tuning
    lora_alpha: float
    unet: bool = True
    text_encoder: bool = False

    def to_meta(self) -> dict[str, str]:
        return {"format": WEIGHTS_FORMAT, "version": "1", "lora_rank": str(self.lora_rank),
                "lora_alpha": repr(float(self.lora_alpha)), "text_encoder": "1" if self.text_encoder else "0"}

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> Tuning:
        if meta.get("format") != WEIGHTS_FORMAT:
            raise ValueError("not a pie sd weights file")
        return cls(lora_rank=int(meta["lora_rank"]), lora_alpha=float(meta["lora_alpha"]),
                   text_encoder=meta.get("text_encoder") == "1")


@dataclass
class Parts:
    # diffusers' and transformers' models: typed as Any, since the type check does not follow
    # those libraries (mypy.ini), and nn.Module's own typing would make every `.config` a Tensor.
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    text_encoder_2: Any = None   # SDXL's second text encoder (CLIPTextModelWithProjection), frozen
    tokenizer_2: Any = None

    def models(self) -> list[Any]:
        """Every torch module of the checkpoint."""
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]


def have_accelerate() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def load_base(base: Base, dtype: torch.dtype = torch.float32) -> Parts:
    """The base checkpoint's parts, fp32 on the CPU, from the local (or converted) folder only."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    p = str(base.diffusers_folder)
    common: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
    if base.variant:
        common["variant"] = base.variant
    low = have_accelerate()
    unet = UNet2DConditionModel.from_pretrained(p, subfolder="unet", low_cpu_mem_usage=low, **common)
    vae = AutoencoderKL.from_pretrained(p, subfolder="vae", low_cpu_mem_usage=low, **common)
    text_encoder = CLIPTextModel.from_pretrained(p, subfolder="text_encoder", dtype=dtype, local_files_only=True,
                                                 attn_implementation="eager",
                                                 **({"variant": base.variant} if base.variant else {}))
    tokenizer = CLIPTokenizer.from_pretrained(p, subfolder="tokenizer", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(p, subfolder="scheduler", local_files_only=True)
    parts = Parts(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
    if base.text_encoder_2 is not None:
        from transformers import CLIPTextModelWithProjection
        parts.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            p, subfolder="text_encoder_2", dtype=dtype, local_files_only=True, attn_implementation="eager",
            **({"variant": base.variant} if base.variant else {}))
        parts.tokenizer_2 = CLIPTokenizer.from_pretrained(p, subfolder="tokenizer_2", local_files_only=True)
    for m in parts.models():
        m.requires_grad_(False).eval()
    return parts


def add_lora(model: nn.Module, rank: int, alpha: float, targets: list[str]) -> None:
    from peft import LoraConfig, inject_adapter_in_model
    cfg = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(cfg, model)


def prepare(parts: Parts, tuning: Tuning) -> None:
    """Make the tuned modules trainable: LoRA adapters (fp32) or every weight."""
    if tuning.lora_rank > 0:
        add_lora(parts.unet, tuning.lora_rank, tuning.lora_alpha, UNET_LORA_TARGETS)
        parts.unet.requires_grad_(False)
        for n, prm in parts.unet.named_parameters():
            if "lora_" in n:
                prm.requires_grad_(True)
        if tuning.text_encoder:
            add_lora(parts.text_encoder, tuning.lora_rank, tuning.lora_alpha, TEXT_LORA_TARGETS)
            parts.text_encoder.requires_grad_(False)
            for n, prm in parts.text_encoder.named_parameters():
                if "lora_" in n:
                    prm.requires_grad_(True)
    else:
        parts.unet.requires_grad_(True)
        if tuning.text_encoder:
            parts.text_encoder.requires_grad_(True)


def trainable(parts: Parts, tuning: Tuning) -> dict[str, nn.Parameter]:
    out: dict[str, nn.Parameter] = {}
    mods = [("unet", parts.unet)] + ([("text_encoder", parts.text_encoder)] if tuning.text_encoder else [])
    for prefix, m in mods:
        for n, prm in m.named_parameters():
            if prm.requires_grad:
                out[f"{prefix}.{n}"] = prm
    return out


def trained_state(parts: Parts, tuning: Tuning) -> dict[str, torch.Tensor]:
    """What weights.safetensors holds: the trained tensors, fp32, CPU, contiguous."""
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in trainable(parts, tuning).items()}


def load_trained(parts: Parts, state: dict[str, torch.Tensor]) -> None:
    """Put trained tensors (keys 'unet.*' / 'text_encoder.*') into prepared parts; every key must land."""
    for prefix, m in (("unet", parts.unet), ("text_encoder", parts.text_encoder)):
        sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        if not sub:
            continue
        own = dict(m.named_parameters())
        unknown = [k for k in sub if k not in own]
        if unknown:
            raise ValueError(f"the weights do not fit the {prefix}: {unknown[:3]} ...")
        with torch.no_grad():
            for k, v in sub.items():
                if own[k].shape != v.shape:
                    raise ValueError(f"{prefix}.{k}: shape {tuple(v.shape)} where the model has {tuple(own[k].shape)}")
                own[k].copy_(v.to(own[k].dtype))


def save_weights(parts: Parts, tuning: Tuning, path: Path, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file
    meta = {**tuning.to_meta(), "info": json.dumps(info, sort_keys=True)}
    save_file(trained_state(parts, tuning), str(path), metadata=meta)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], Tuning, dict[str, Any]]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    return state, Tuning.from_meta(meta), json.loads(meta.get("info") or "{}")


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and put the plain layer back (for export)."""
    from peft.tuners.lora import LoraLayer
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in targets:
        layer.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    return model


def finetuned(base: Base, weights: Path | None, tuning: Tuning | None = None) -> tuple[Parts, Tuning]:
    """The fine-tuned model, fp32 on the CPU, LoRA merged: base + weights.safetensors."""
    parts = load_base(base)
    if weights is None:
        assert tuning is not None
        return parts, tuning
    state, t, _ = read_weights(weights)
    prepare(parts, t)
    load_trained(parts, state)
    if t.lora_rank > 0:
        merge_lora(parts.unet)
        if t.text_encoder:
            merge_lora(parts.text_encoder)
    for m in parts.models():
        m.requires_grad_(False).eval()
    return parts, t
