"""The pixel-unet's training: AdamW, EMA, CFG token dropout, previews, its checkpoint.

`PixelTraining` is the `core.run.Training` the run skeleton drives, one step at a time.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core import checkpoint as ck
from ..core.progress import Progress
from ..core.stop import StopFlag
from ..core.views import to_uint8
from .diffusion import Schedule, add_noise, ddim_sample
from .model import NULL_TOKEN, TinyUNet, UNetConfig
from .settings import Settings
from .speed import autocast, memory_format
from .weights import WEIGHTS, weights_payload

PREVIEW_DDIM_STEPS = 25
PREVIEW_GUIDANCE = 3.0
PREVIEW_PER_TOKEN = 4
# The probe: a fixed denoising test of the EMA model, the same for every run of the same
# images, so that two settings can be compared by a number as well as by eye.
PROBE_SEED = 20261203
PROBE_CROPS = 32
PROBE_TIMESTEPS = (20, 100, 250, 500, 750)


@dataclass
class Batch:
    x0: torch.Tensor      # [N, 3, R, R] in [-1, 1]
    token: torch.Tensor   # [N] int64
    weight: torch.Tensor  # [N, 1, R, R] loss weight (the subject mask; 1 for the scene)


class PixelTraining:
    """The model, its EMA copy, the optimiser and the generator every random draw comes from."""

    def __init__(self, stage: int, settings: Settings, config: UNetConfig, schedule: Schedule,
                 device: torch.device, mode: str, init: dict[str, torch.Tensor] | None,
                 make_batch: Callable[[int, torch.Generator, int], Batch], preview_tokens: list[int],
                 weights_info: Callable[[int], dict[str, Any]], checkpoints: Path, progress: Progress,
                 stop: StopFlag) -> None:
        self.stage, self.settings, self.schedule = stage, settings, schedule
        self.device, self.mode = device, mode
        self.make_batch, self.preview_tokens, self.weights_info = make_batch, preview_tokens, weights_info
        self.checkpoints, self.progress, self.stop = checkpoints, progress, stop
        torch.manual_seed(settings.seed)
        model = TinyUNet(config)
        if init is not None:
            model.load_state_dict(init)
        self.ema = copy.deepcopy(model).float().eval().requires_grad_(False).to(device)
        self.model = model.to(device).to(memory_format=memory_format(mode))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        # How far the run is, 0..1, set by the run skeleton before each step: the larger of
        # the steps done and the time budget used, so that a run its budget ends still
        # reaches the end of its learning-rate schedule.
        self.fraction = 0.0
        self.ema_updates = 0
        self.loss_avg = 0.0
        self.extra: dict[str, Any] = {}   # stage data kept in the checkpoint
        self.acp = schedule.alphas_cumprod().to(torch.float32).to(device)
        self.model.train()

    def train_step(self) -> None:
        s = self.settings
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(s, self.fraction)
        coarse = s.coarse > 0 and self.fraction < s.coarse
        b = self.make_batch(s.batch, self.gen, coarse_resolution(s) if coarse else s.resolution)
        n = b.x0.shape[0]
        noise = torch.randn(b.x0.shape, generator=self.gen)
        t = torch.randint(0, self.schedule.num_train_timesteps, (n,), generator=self.gen)
        drop = torch.rand(n, generator=self.gen) < s.null_prob
        token = torch.where(drop, torch.full_like(b.token, NULL_TOKEN), b.token)
        x0, noise, weight = b.x0.to(self.device), noise.to(self.device), b.weight.to(self.device)
        t, token = t.to(self.device), token.to(self.device)
        xt = add_noise(x0, noise, t, self.acp).contiguous(memory_format=memory_format(self.mode))
        with autocast(self.device, self.mode):
            eps = self.model(xt, t, token)
        loss = masked_mse(eps, noise, weight, min_snr_weight(self.acp, t, s.min_snr) if s.min_snr > 0 else None)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.opt.step()
        update_ema(self, s.ema_max)
        self.step += 1
        lv = float(loss.detach())
        self.loss_avg = lv if self.step == 1 else 0.95 * self.loss_avg + 0.05 * lv

    def between_steps(self) -> bool:
        every = self.settings.preview_every
        if every > 0 and self.step % every == 0:
            self.write_preview()
            return True
        return False

    def write_preview(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        img = preview_grid(self.ema, self.preview_tokens, self.settings.resolution, self.schedule,
                           self.settings.seed + self.step, self.device, should_stop=self.stop)
        if self.stop():
            return
        path = self.checkpoints / f"preview-stage{self.stage}-{self.step:06d}.png"
        img.save(path)
        self.progress.emit("preview", stage=self.stage, step=self.step, path=str(path))

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "settings": self.settings.to_dict(), "step": self.step,
                "ema_updates": self.ema_updates, "loss_avg": self.loss_avg, "model": ck.cpu_state(self.model),
                "ema": ck.cpu_state(self.ema), "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "extra": self.extra}

    def restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.opt.load_state_dict(saved["opt"])
        self.gen.set_state(saved["gen"])
        self.step = int(saved["step"])
        self.ema_updates = int(saved["ema_updates"])
        self.loss_avg = float(saved["loss_avg"])
        self.extra = dict(saved.get("extra") or {})

    @torch.no_grad()
    def probe(self) -> dict[str, Any]:
        """The EMA model's denoising error (masked ε MSE, fp32) on PROBE_CROPS crops, noise
        draws and PROBE_TIMESTEPS that depend only on the images: lower is better."""
        gen = torch.Generator().manual_seed(PROBE_SEED)
        b = self.make_batch(PROBE_CROPS, gen, self.settings.resolution)
        x0, weight, token = b.x0.to(self.device), b.weight.to(self.device), b.token.to(self.device)
        per_t: dict[str, float] = {}
        for step in PROBE_TIMESTEPS:
            noise = torch.randn(b.x0.shape, generator=gen).to(self.device)
            t = torch.full((x0.shape[0],), step, dtype=torch.int64, device=self.device)
            eps = self.ema(add_noise(x0, noise, t, self.acp), t, token)
            per_t[str(step)] = round(float(masked_mse(eps, noise, weight)), 6)
        return {"mean": round(sum(per_t.values()) / len(per_t), 6), "by_timestep": per_t,
                "crops": PROBE_CROPS, "seed": PROBE_SEED}

    def weights(self) -> dict[str, Any]:
        """weights.pt's content at the current step."""
        return weights_payload(self.ema, self.ema.config, self.weights_info(self.step))

    def save_checkpoint(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        ck.save_torch(self.state_dict(), self.checkpoints / ck.STATE)
        ck.save_torch(self.weights(), self.checkpoints / WEIGHTS)


@torch.no_grad()
def update_ema(st: PixelTraining, ema_max: float) -> None:
    decay = min(ema_max, (1 + st.ema_updates) / (10 + st.ema_updates))
    for pe, pm in zip(st.ema.parameters(), st.model.parameters(), strict=True):
        pe.lerp_(pm.detach().float(), 1.0 - decay)
    st.ema_updates += 1


def preview_grid(ema: nn.Module, tokens: list[int], resolution: int, schedule: Schedule, seed: int,
                 device: torch.device, should_stop: Callable[[], bool] | None = None) -> Image.Image:
    """PREVIEW_PER_TOKEN EMA samples per token, one row per token."""
    gen = torch.Generator().manual_seed(seed)
    tok = torch.tensor([t for t in tokens for _ in range(PREVIEW_PER_TOKEN)], dtype=torch.int64, device=device)
    x = ddim_sample(ema, tok, resolution, resolution, schedule, steps=PREVIEW_DDIM_STEPS,
                    guidance=PREVIEW_GUIDANCE, null_token=NULL_TOKEN, generator=gen, should_stop=should_stop)
    r = resolution
    grid = np.zeros((len(tokens) * r, PREVIEW_PER_TOKEN * r, 3), np.uint8)
    for i in range(tok.shape[0]):
        row, col = divmod(i, PREVIEW_PER_TOKEN)
        grid[row * r:(row + 1) * r, col * r:(col + 1) * r] = to_uint8(x[i])
    return Image.fromarray(grid)


def learning_rate(s: Settings, fraction: float) -> float:
    """The learning rate `fraction` (0..1) of the way through the run."""
    if s.lr_schedule == "constant":
        return s.lr
    f = min(max(fraction, 0.0), 1.0)
    if s.warmup > 0 and f < s.warmup:
        # Never exactly 0: the first step must move the weights.
        return s.lr * max(f / s.warmup, 0.01)
    span = max(1.0 - s.warmup, 1e-9)
    cos = 0.5 * (1.0 + math.cos(math.pi * min((f - s.warmup) / span, 1.0)))
    return s.lr * (s.lr_min + (1.0 - s.lr_min) * cos)


def coarse_resolution(s: Settings) -> int:
    """The coarse phase's crop side: a multiple of 4 (the network's), at least 16."""
    r = s.coarse_resolution or s.resolution // 2
    return max(16, r // 4 * 4)


def min_snr_weight(acp: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample weights min(SNR, gamma) / SNR for ε prediction (Hang et al., min-SNR):
    the many easy low-noise steps stop dominating the gradient."""
    a = acp[t]
    snr = a / (1.0 - a)
    return (snr.clamp(max=gamma) / snr).float()


def masked_mse(eps: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor,
               sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the weighted pixels, normalised by their total weight.

    `weight` [N, 1, H, W] (or broadcastable to it) is 0 where a pixel must not be
    learned (outside a subject's mask, inside a scene's exclude mask): such pixels
    contribute neither to the sum nor to the count, so their gradient is exactly 0.
    """
    n = eps.shape[0]
    weight = weight.expand(n, 1, *eps.shape[2:])
    err = (eps.float() - noise).pow(2) * weight
    if sample_weight is not None:
        # Normalised by the pixel weights alone, so the loss's scale says how much was weighted down.
        err = err * sample_weight[:, None, None, None]
    return err.sum() / (weight.sum() * eps.shape[1]).clamp_min(1.0)
