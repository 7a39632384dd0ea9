"""TinyUNet: the `pixel-unet` backbone, a small fully-convolutional conditional UNet.

in-conv -> 3 levels (ch x1, x2, x4; one ResBlock each; stride-2 conv down) ->
2 middle ResBlocks -> mirrored up path (nearest upsample + conv, skip concat)
-> GroupNorm/SiLU/conv out, zero-initialised. Every ResBlock adds the
time + token embedding per channel. H and W must be multiples of 4.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

NULL_TOKEN = 0
SCENE_TOKEN = 1
SUBJECT_TOKEN = 2
VOCAB_SIZE = 3
SIZE_MULTIPLE = 4
MIN_SIZE = 16


@dataclass(frozen=True)
class UNetConfig:
    base_channels: int = 32
    vocab_size: int = VOCAB_SIZE
    groups: int = 8

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip: nn.Module = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class Upsample(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TinyUNet(nn.Module):
    """x[N,3,H,W], t[N] int64, token[N] int64 -> eps[N,3,H,W]."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.base_channels
        g = config.groups
        emb_dim = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.token_emb = nn.Embedding(config.vocab_size, emb_dim)
        self.emb_act = nn.SiLU()
        self.in_conv = nn.Conv2d(3, c, 3, padding=1)
        self.down0 = ResBlock(c, c, emb_dim, g)
        self.pool0 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down1 = ResBlock(2 * c, 2 * c, emb_dim, g)
        self.pool1 = nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1)
        self.down2 = ResBlock(4 * c, 4 * c, emb_dim, g)
        self.mid0 = ResBlock(4 * c, 4 * c, emb_dim, g)
        self.mid1 = ResBlock(4 * c, 4 * c, emb_dim, g)
        self.up1 = Upsample(4 * c, 2 * c)
        self.dec1 = ResBlock(4 * c, 2 * c, emb_dim, g)
        self.up0 = Upsample(2 * c, c)
        self.dec0 = ResBlock(2 * c, c, emb_dim, g)
        self.out_norm = nn.GroupNorm(g, c)
        self.out_conv = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        if self.out_conv.bias is not None:
            nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels)) + self.token_emb(token)
        emb = self.emb_act(emb)
        h0 = self.down0(self.in_conv(x), emb)
        h1 = self.down1(self.pool0(h0), emb)
        h2 = self.down2(self.pool1(h1), emb)
        h = self.mid1(self.mid0(h2, emb), emb)
        h = self.dec1(torch.cat([self.up1(h), h1], dim=1), emb)
        h = self.dec0(torch.cat([self.up0(h), h0], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))


def build_model(config: UNetConfig) -> TinyUNet:
    return TinyUNet(config)
