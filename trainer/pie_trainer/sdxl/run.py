"""Stage I and Stage II on the sdxl backbone: the sd backbone's run (sd/run.py: DreamBooth LoRA
on the UNet, prior preservation with the scene replayed in Stage II, mask-weighted subject loss,
export, verification, bundle) with SDXL's conditioning in place of sd's:

- prompt embeddings: both text encoders' penultimate hidden states, concatenated; pooled:
  the second encoder's projected text_embeds (sdxl/export.py: `encode_prompts`);
- time_ids [R, R, 0, 0, R, R] for the R x R training views (original size, crop top-left,
  target size), as the engine passes the working size and a crop at 0, 0;
- the null prompt of caption dropout is all zeros when the checkpoint says
  force_zeros_for_empty_prompt (as diffusers does for SDXL), else the encoding of "".
- SDXL's VAE overflows in float16 (its config says force_upcast): it stays float32 while
  training in fp16 and in a float16 bundle's VAE graphs (their inputs and outputs are
  float32 either way), as diffusers upcasts it.
- Once the prompts are encoded (the text encoders are frozen), both text encoders leave
  the GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ..core.run import Run, Runtime
from ..sd import models as md
from ..sd.run import SdJob, Trainer
from . import NAME, TIME_IDS
from . import export as xex


class XlJob(SdJob):
    backbone: ClassVar[str] = NAME

    def trainer(self, run: Run) -> Trainer:
        return XlTrainer(self, run.rt, run.checkpoints)

    def export_one(self, name: str, parts: md.Parts, folder: Path, L: int, device: torch.device,
                   dtype: torch.dtype) -> list[str]:
        if name not in xex.OWN:
            return super().export_one(name, parts, folder, L, device, self.vae_dtype(dtype))
        return xex.export_graph(name, parts, folder, L, self.base.size_multiple, self.base.vae_scale_factor,
                                device, dtype)

    def vae_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32 if dtype == torch.float16 and self.base.vae.get("force_upcast", True) else dtype

    def verify(self, parts: md.Parts, folder: Path, files: dict[str, str], L: int, threads: int,
               precision: str) -> dict[str, Any]:
        return xex.verify(parts, folder, files, L, self.base.size_multiple, self.base.vae_scale_factor, threads,
                          precision)

    def hidden_size(self, parts: md.Parts) -> int:
        return xex.sizes(parts)[0]

    def graphs_manifest(self, files: dict[str, str], L: int, D: int, parts: md.Parts) -> dict[str, Any]:
        return xex.graphs_manifest(files, L, D, self.base.in_channels, xex.sizes(parts)[1])

    def model_extra(self, parts: md.Parts) -> dict[str, Any]:
        return {"conditioning": {"pooled_size": xex.sizes(parts)[1], "time_ids": list(TIME_IDS),
                                 "pad_id_2": int(parts.tokenizer_2.pad_token_id),
                                 "zero_negative": self.base.force_zeros_for_empty_prompt}}


class XlTrainer(Trainer):
    """sd's trainer with SDXL's text conditioning and added UNet inputs. `ids[k]` holds both
    tokenizers' ids of prompt k, [1, 2, L] (row 0: tokenizer, row 1: tokenizer_2)."""

    def __init__(self, job: SdJob, rt: Runtime, checkpoints: Path) -> None:
        super().__init__(job, rt, checkpoints)
        if self.cached and self.device.type == "cuda":
            self.parts.text_encoder.to("cpu")
            self.parts.text_encoder_2.to("cpu")
            torch.cuda.empty_cache()

    def load_parts(self) -> md.Parts:
        parts = md.load_base(self.job.base)
        assert parts.text_encoder_2 is not None and parts.tokenizer_2 is not None
        return parts

    def tokenize(self, text: str) -> torch.Tensor:
        ids = super().tokenize(text)
        ids_2 = self.parts.tokenizer_2(text, padding="max_length", max_length=self.L, truncation=True,
                                       return_tensors="pt").input_ids
        return torch.stack([ids, ids_2], dim=1)

    def encode_text(self, keys: list[str]) -> tuple[torch.Tensor, ...]:
        ids = torch.cat([self.ids[k] for k in keys]).to(self.device)
        hidden, pooled = xex.encode_prompts(self.parts.text_encoder, self.parts.text_encoder_2, ids[:, 0], ids[:, 1])
        if self.job.base.force_zeros_for_empty_prompt:
            keep = torch.tensor([k != "null" for k in keys], device=hidden.device)
            hidden = hidden * keep.view(-1, 1, 1).to(hidden.dtype)
            pooled = pooled * keep.view(-1, 1).to(pooled.dtype)
        return hidden, pooled

    def predict(self, inp: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, ...]) -> torch.Tensor:
        hidden, pooled = cond
        r = self.s.resolution
        added = {"text_embeds": pooled, "time_ids": xex.time_ids(inp.shape[0], r, r, hidden.dtype, inp.device)}
        return self.parts.unet(inp, t, hidden, added_cond_kwargs=added, return_dict=False)[0]
