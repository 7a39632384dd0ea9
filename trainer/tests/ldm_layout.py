"""Test helper: a diffusers-layout SD checkpoint's weights renamed to the original ("LDM")
single-file layout that A1111 and ComfyUI keep (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.*), so that the single-file conversion can be checked against
the folder it came from. Written from the two layouts' module structure: the UNet's
down/up blocks are numbered input_blocks/output_blocks, one entry per resnet (with its
attention) and one per resampler; the VAE's decoder levels run the other way."""

from __future__ import annotations

import re
from typing import Any

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_key(key: str, layers: int, attn_up: set[int]) -> str:
    """One diffusers UNet key -> its LDM name (without the model.diffusion_model. prefix).
    `layers`: layers_per_block; `attn_up`: the up blocks that have attentions."""
    top = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
           "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
           "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}
    for new, old in top.items():
        if key.startswith(new):
            return old + key[len(new):]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = 1 + b * (layers + 1) + j
        return f"input_blocks.{i}.0.{_resnet(rest, RESNET)}" if kind == "resnets" else f"input_blocks.{i}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
        kind, j, rest = m[1], int(m[2]), m[3]
        return f"middle_block.{2 * j}.{_resnet(rest, RESNET)}" if kind == "resnets" else f"middle_block.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = b * (layers + 1) + j
        return f"output_blocks.{i}.0.{_resnet(rest, RESNET)}" if kind == "resnets" else f"output_blocks.{i}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        return f"output_blocks.{b * (layers + 1) + layers}.{2 if b in attn_up else 1}.conv.{m[2]}"
    raise KeyError(key)


def vae_key(key: str, levels: int) -> tuple[str, bool]:
    """One diffusers VAE key -> its LDM name (without first_stage_model.), and whether the
    tensor is an attention projection (a Linear in diffusers, a 1x1 conv in LDM)."""
    for side in ("encoder", "decoder"):
        if not key.startswith(side + "."):
            continue
        rest = key[len(side) + 1:]
        if rest.startswith("conv_norm_out."):
            return f"{side}.norm_out.{rest[len('conv_norm_out.'):]}", False
        if m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
            lvl = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
            return f"{side}.{m[1]}.{lvl}.block.{m[3]}.{m[4].replace('conv_shortcut', 'nin_shortcut')}", False
        if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", rest):
            return f"{side}.down.{m[1]}.downsample.conv.{m[2]}", False
        if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", rest):
            return f"{side}.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}", False
        if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
            return f"{side}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}", False
        if m := re.match(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)", rest):
            return f"{side}.mid.attn_1.{VAE_ATTN[m[1]]}.{m[2]}", m[1] != "group_norm" and m[2] == "weight"
        return key, False
    return key, False   # quant_conv, post_quant_conv


OPEN_CLIP_TOP = {"embeddings.position_embedding.weight": "positional_embedding",
                 "embeddings.token_embedding.weight": "token_embedding.weight",
                 "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}


def open_clip_state(text: dict[str, Any]) -> dict[str, Any]:
    """A CLIPTextModelWithProjection's state dict in OpenCLIP's layout (SDXL's second encoder): q, k
    and v fused into in_proj, the projection transposed (no prefix)."""
    import torch
    out: dict[str, Any] = {}
    for k, v in text.items():
        k = k.removeprefix("text_model.")
        if k == "text_projection.weight":
            out["text_projection"] = v.T
        elif k in OPEN_CLIP_TOP:
            out[OPEN_CLIP_TOP[k]] = v
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*)", k):
            i, rest = m[1], m[2]
            if q := re.match(r"self_attn\.q_proj\.(weight|bias)", rest):
                kind = q[1]
                fused = [text[f"text_model.encoder.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(fused)
            elif not re.match(r"self_attn\.[kv]_proj\.", rest):
                out[f"transformer.resblocks.{i}." + _resnet(rest, OPEN_CLIP_LAYER)] = v
    return out


def to_ldm(unet: dict[str, Any], vae: dict[str, Any], text: dict[str, Any], layers: int, attn_up: set[int],
           vae_levels: int, text_2: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parts' state dicts as one LDM-layout state dict: CLIP ViT-L's text encoder layout, or with
    `text_2` SDXL's (conditioner.embedders.0 CLIP, .1 OpenCLIP)."""
    out: dict[str, Any] = {}
    for k, v in unet.items():
        out["model.diffusion_model." + unet_key(k, layers, attn_up)] = v
    for k, v in vae.items():
        name, conv = vae_key(k, vae_levels)
        out["first_stage_model." + name] = v.reshape(*v.shape, 1, 1) if conv else v
    clip = "cond_stage_model.transformer." if text_2 is None else "conditioner.embedders.0.transformer."
    for k, v in text.items():
        out[clip + "text_model." + k.removeprefix("text_model.")] = v
    for k, v in open_clip_state(text_2 or {}).items():
        out["conditioner.embedders.1.model." + k] = v
    return out


def save_single_file(folder: str, out: str) -> None:
    """A diffusers-layout SD (or SDXL) checkpoint folder -> one LDM-layout .safetensors file."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file, save_file
    f = Path(folder)
    unet_cfg = json.loads((f / "unet" / "config.json").read_text())
    vae_cfg = json.loads((f / "vae" / "config.json").read_text())
    attn_up = {i for i, b in enumerate(unet_cfg["up_block_types"]) if b.startswith("CrossAttn")}
    text_2 = f / "text_encoder_2" / "model.safetensors"
    state = to_ldm(load_file(f / "unet" / "diffusion_pytorch_model.safetensors"),
                   load_file(f / "vae" / "diffusion_pytorch_model.safetensors"),
                   load_file(f / "text_encoder" / "model.safetensors"),
                   unet_cfg["layers_per_block"], attn_up, len(vae_cfg["block_out_channels"]),
                   load_file(text_2) if text_2.is_file() else None)
    save_file({k: v.contiguous() for k, v in state.items()}, out)


if __name__ == "__main__":
    import sys
    save_single_file(sys.argv[1], sys.argv[2])
