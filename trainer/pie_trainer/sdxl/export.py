"""Export of a fine-tuned SDXL model under the sdxl bundle contract (schema/README.md,
"Backbone sdxl"), and its check against PyTorch with ONNX Runtime. The VAE graphs are
sd's (sd/export.py); the text encoder and UNet graphs carry SDXL's added conditioning:

| graph | inputs | outputs |
|---|---|---|
| text_encoder | input_ids[N,L] int64, input_ids_2[N,L] int64 | last_hidden_state[N,L,D1+D2], text_embeds[N,P] |
| unet | sample, timestep[N] int64, encoder_hidden_states[N,L,D1+D2], text_embeds[N,P], time_ids[N,6] | noise_pred |

`last_hidden_state` is both encoders' penultimate hidden states, concatenated (what
diffusers' StableDiffusionXLPipeline feeds the UNet), `text_embeds` the second encoder's
pooled, projected output. The trainer conditions its UNet with the same function
(`encode_prompts`), so what is trained is what is exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..sd import export as ex

OWN = ("text_encoder", "unet")     # the graphs this module makes; the VAE ones are sd's


def encode_prompts(te: Any, te2: Any, ids: torch.Tensor, ids_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's prompt embeddings: (concat of both encoders' penultimate hidden states [N,L,D1+D2],
    the second encoder's pooled projection [N,P])."""
    o1 = te(input_ids=ids, output_hidden_states=True, return_dict=True)
    o2 = te2(input_ids=ids_2, output_hidden_states=True, return_dict=True)
    return torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1), o2.text_embeds


def time_ids(n: int, height: int, width: int, dtype: torch.dtype = torch.float32,
             device: torch.device | None = None) -> torch.Tensor:
    """[n,6]: original size, crop top-left (0, 0), target size, in pixels (the engine passes the same)."""
    row = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=device)
    return row.repeat(n, 1)


class TextEncoders(nn.Module):
    def __init__(self, te: Any, te2: Any) -> None:
        super().__init__()
        self.te, self.te2 = te, te2

    def forward(self, input_ids: torch.Tensor, input_ids_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = encode_prompts(self.te, self.te2, input_ids, input_ids_2)
        return hidden.float(), pooled.float()


class UNet(nn.Module):
    def __init__(self, unet: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.unet, self.dtype = unet, dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                text_embeds: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        added = {"text_embeds": text_embeds.to(self.dtype), "time_ids": time_ids.to(self.dtype)}
        out = self.unet(sample.to(self.dtype), timestep, encoder_hidden_states.to(self.dtype),
                        added_cond_kwargs=added, return_dict=False)[0]
        return out.float()


def sizes(parts: Any) -> tuple[int, int]:
    """(D, P): the width of last_hidden_state (D1 + D2) and of text_embeds."""
    D = int(parts.text_encoder.config.hidden_size) + int(parts.text_encoder_2.config.hidden_size)
    return D, int(parts.text_encoder_2.config.projection_dim)


def export_graph(name: str, parts: Any, folder: Path, L: int, size_multiple: int, vsf: int,
                 device: torch.device, dtype: torch.dtype) -> list[str]:
    if name not in OWN:
        return ex.export_graph(name, parts, folder, L, size_multiple, vsf, device, dtype)
    D, P = sizes(parts)
    if name == "text_encoder":
        ids = torch.zeros(1, L, dtype=torch.int64, device=device)
        return ex.export_module(name, TextEncoders(parts.text_encoder, parts.text_encoder_2), (ids, ids),
                                ["input_ids", "input_ids_2"], ["last_hidden_state", "text_embeds"],
                                {"input_ids": {0: "N"}, "input_ids_2": {0: "N"}, "last_hidden_state": {0: "N"},
                                 "text_embeds": {0: "N"}}, folder)
    h = w = max(2, size_multiple // vsf) * 2
    C = int(parts.unet.config.in_channels)
    args = (torch.zeros(1, C, h, w, device=device), torch.zeros(1, dtype=torch.int64, device=device),
            torch.zeros(1, L, D, device=device), torch.zeros(1, P, device=device),
            time_ids(1, h * vsf, w * vsf, device=device))
    return ex.export_module(name, UNet(parts.unet, dtype), args,
                            ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"], ["noise_pred"],
                            {"sample": {0: "N", 2: "h", 3: "w"}, "timestep": {0: "N"},
                             "encoder_hidden_states": {0: "N"}, "text_embeds": {0: "N"}, "time_ids": {0: "N"},
                             "noise_pred": {0: "N", 2: "h", 3: "w"}}, folder)


def graphs_manifest(files: dict[str, str], L: int, D: int, C: int, P: int) -> dict[str, Any]:
    t = ex.tensor
    graphs = ex.graphs_manifest(files, L, D, C)
    graphs["text_encoder"]["inputs"] = [t("input_ids", "int64", ["N", L]), t("input_ids_2", "int64", ["N", L])]
    graphs["text_encoder"]["outputs"] = [t("last_hidden_state", "float32", ["N", L, D]),
                                         t("text_embeds", "float32", ["N", P])]
    graphs["unet"]["inputs"] += [t("text_embeds", "float32", ["N", P]), t("time_ids", "float32", ["N", 6])]
    return graphs


def verify(parts: Any, folder: Path, files: dict[str, str], L: int, size_multiple: int, vsf: int,
           threads: int, precision: str, seed: int = 0) -> dict[str, Any]:
    """Every graph with ONNX Runtime against the fp32 PyTorch model (sd/export.py's `verify` for the
    VAE graphs and the same tolerances); non-square latents, a batch of 2, two different sizes in time_ids."""
    gen = torch.Generator().manual_seed(seed)
    vocab = int(parts.text_encoder.config.vocab_size)
    D, P = sizes(parts)
    C = int(parts.unet.config.in_channels)
    m = max(1, size_multiple // vsf)
    h1, w1 = 2 * m, 3 * m
    providers = ex.providers_for(precision)
    report: dict[str, Any] = {}
    path = folder / files["text_encoder"]
    ex.check_graph(path, files["text_encoder"])
    feeds = {"input_ids": torch.randint(0, vocab, (2, L), generator=gen),
             "input_ids_2": torch.randint(0, vocab, (2, L), generator=gen)}
    report["text_encoder"] = ex.compare(path, files["text_encoder"],
                                        TextEncoders(parts.text_encoder, parts.text_encoder_2), feeds,
                                        ["last_hidden_state", "text_embeds"], threads, providers, precision)
    path = folder / files["unet"]
    ex.check_graph(path, files["unet"])
    tid = torch.cat([time_ids(1, h1 * vsf, w1 * vsf), time_ids(1, 1024, 768)])
    feeds = {"sample": torch.randn(2, C, h1, w1, generator=gen), "timestep": torch.tensor([10, 900]),
             "encoder_hidden_states": torch.randn(2, L, D, generator=gen),
             "text_embeds": torch.randn(2, P, generator=gen), "time_ids": tid}
    report["unet"] = ex.compare(path, files["unet"], UNet(parts.unet, torch.float32), feeds, ["noise_pred"],
                                threads, providers, precision)
    report.update(ex.verify(parts, folder, files, L, size_multiple, vsf, threads, precision, seed,
                            graphs=("vae_encoder", "vae_decoder")))
    return report
