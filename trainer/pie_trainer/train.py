"""The training loop shared by both stages: AdamW, EMA, CFG token dropout, previews,
periodic and on-signal checkpoints, rate watching."""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import checkpoint as ck
from .data import Batch, to_uint8
from .diffusion import Schedule, add_noise, ddim_sample
from .errors import Cancelled
from .model import NULL_TOKEN, TinyUNet, UNetConfig
from .progress import Progress, detach_std_streams, log
from .settings import Settings
from .speed import RateWatcher, autocast, memory_format

PREVIEW_DDIM_STEPS = 25
PREVIEW_GUIDANCE = 3.0
PREVIEW_PER_TOKEN = 4


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps (and inside previews).

    SIGINT is the engine's "stop with a checkpoint": the run stops at the next step,
    however long the current phase takes. SIGTERM stops the same way, but it must end
    the process even where nothing checks the flag (a phase that cannot be
    interrupted, a write to a pipe nobody reads any more): `term_grace_s` seconds
    after it the process exits with 128 + SIGTERM, finished or not. A SIGTERM after
    either signal exits at once, the same way; a second SIGINT changes nothing.
    """

    TERM_GRACE_S = 30.0

    def __init__(self, term_grace_s: float = TERM_GRACE_S) -> None:
        self.signum: int | None = None
        self._parent = os.getppid()
        self._term_grace_s = term_grace_s

    def install(self) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if os.getppid() != self._parent:
            # The engine died (its PDEATHSIG is this signal): nothing reads our
            # output any more, and a write to it must not stop the checkpoint.
            detach_std_streams()
        if self.signum is not None:
            if signum == signal.SIGINT:
                # The engine's stop and, when GIMP then ends the plug-in, its
                # death signal both arrive as SIGINT: the checkpoint must still be written.
                log("signal 2 received again: still stopping at the next step")
                return
            log(f"signal {signum} received again: exiting now")
            os._exit(128 + signum)
        log(f"signal {signum} received: stopping at the next step and writing a checkpoint")
        self.signum = signum
        if signum == signal.SIGTERM:
            threading.Thread(target=self._deadline, args=(signum,), name="pie-sigterm-deadline", daemon=True).start()

    def _deadline(self, signum: int) -> None:
        time.sleep(self._term_grace_s)
        log(f"still running {self._term_grace_s:g} s after signal {signum}: exiting now")
        os._exit(128 + signum)

    def __call__(self) -> bool:
        return self.signum is not None


@dataclass
class TrainState:
    model: TinyUNet
    ema: TinyUNet
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    ema_updates: int = 0
    loss_avg: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)   # stage data kept in the checkpoint


def new_state(settings: Settings, config: UNetConfig, device: torch.device, mode: str,
              init: dict[str, torch.Tensor] | None) -> TrainState:
    torch.manual_seed(settings.seed)
    model = TinyUNet(config)
    if init is not None:
        model.load_state_dict(init)
    ema = copy.deepcopy(model).float().eval().requires_grad_(False)
    model = model.to(device).to(memory_format=memory_format(mode))
    ema = ema.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    return TrainState(model=model, ema=ema, opt=opt, gen=gen)


def state_dict(st: TrainState, settings: Settings) -> dict[str, Any]:
    return {"version": 1, "settings": settings.to_dict(), "step": st.step, "ema_updates": st.ema_updates,
            "loss_avg": st.loss_avg, "model": ck.cpu_state(st.model), "ema": ck.cpu_state(st.ema),
            "opt": st.opt.state_dict(), "gen": st.gen.get_state(), "extra": st.extra}


def restore_state(st: TrainState, saved: dict[str, Any]) -> None:
    st.model.load_state_dict(saved["model"])
    st.ema.load_state_dict(saved["ema"])
    st.opt.load_state_dict(saved["opt"])
    st.gen.set_state(saved["gen"])
    st.step = int(saved["step"])
    st.ema_updates = int(saved["ema_updates"])
    st.loss_avg = float(saved["loss_avg"])
    st.extra = dict(saved.get("extra") or {})


@torch.no_grad()
def update_ema(st: TrainState, ema_max: float) -> None:
    decay = min(ema_max, (1 + st.ema_updates) / (10 + st.ema_updates))
    for pe, pm in zip(st.ema.parameters(), st.model.parameters()):
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


@dataclass
class LoopContext:
    stage: int
    settings: Settings
    device: torch.device
    mode: str
    schedule: Schedule
    progress: Progress
    stop: StopFlag
    ckpt_dir: Path
    make_batch: Callable[[int, torch.Generator], Batch]
    preview_tokens: list[int]
    watcher: RateWatcher
    weights_info: Callable[[], dict[str, Any]]


def save_checkpoint(ctx: LoopContext, st: TrainState) -> None:
    ctx.ckpt_dir.mkdir(parents=True, exist_ok=True)
    ck.save_torch(state_dict(st, ctx.settings), ctx.ckpt_dir / ck.STATE)
    ck.save_torch(ck.weights_payload(st.ema, st.ema.config, ctx.weights_info()), ctx.ckpt_dir / ck.WEIGHTS)


def cancel(ctx: LoopContext, st: TrainState) -> Cancelled:
    save_checkpoint(ctx, st)
    return Cancelled(ctx.stage, st.step, str(ctx.ckpt_dir))


def masked_mse(eps: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the weighted pixels, normalised by their total weight.

    `weight` [N, 1, H, W] (or broadcastable to it) is 0 where a pixel must not be
    learned (outside a subject's mask, inside a scene's exclude mask): such pixels
    contribute neither to the sum nor to the count, so their gradient is exactly 0.
    """
    n = eps.shape[0]
    weight = weight.expand(n, 1, *eps.shape[2:])
    err = (eps.float() - noise).pow(2) * weight
    return err.sum() / (weight.sum() * eps.shape[1]).clamp_min(1.0)


def train_loop(ctx: LoopContext, st: TrainState) -> None:
    """Runs from st.step to settings.steps. Raises Cancelled after a checkpoint when stopped."""
    s = ctx.settings
    acp = ctx.schedule.alphas_cumprod().to(torch.float32).to(ctx.device)
    T = ctx.schedule.num_train_timesteps
    fmt = memory_format(ctx.mode)
    recent: list[float] = []
    last_time = time.perf_counter()
    st.model.train()
    while st.step < s.steps:
        if ctx.stop():
            raise cancel(ctx, st)
        t0 = time.perf_counter()
        b = ctx.make_batch(s.batch, st.gen)
        n = b.x0.shape[0]
        noise = torch.randn(b.x0.shape, generator=st.gen)
        t = torch.randint(0, T, (n,), generator=st.gen)
        drop = torch.rand(n, generator=st.gen) < s.null_prob
        token = torch.where(drop, torch.full_like(b.token, NULL_TOKEN), b.token)
        x0, noise, weight = b.x0.to(ctx.device), noise.to(ctx.device), b.weight.to(ctx.device)
        t, token = t.to(ctx.device), token.to(ctx.device)
        xt = add_noise(x0, noise, t, acp).contiguous(memory_format=fmt)
        with autocast(ctx.device, ctx.mode):
            eps = st.model(xt, t, token)
        loss = masked_mse(eps, noise, weight)
        st.opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(st.model.parameters(), s.grad_clip)
        st.opt.step()
        update_ema(st, s.ema_max)
        st.step += 1
        lv = float(loss.detach())
        st.loss_avg = lv if st.step == 1 else 0.95 * st.loss_avg + 0.05 * lv
        msg = ctx.watcher.add(time.perf_counter() - t0)
        if msg:
            log(msg)
        now = time.perf_counter()
        recent.append(now - last_time)
        last_time = now
        recent = recent[-20:]
        rate = len(recent) / max(sum(recent), 1e-9)
        ctx.progress.progress(ctx.stage, st.step, s.steps, st.loss_avg, rate, force=st.step == s.steps)
        if s.preview_every > 0 and st.step % s.preview_every == 0 and st.step < s.steps:
            write_preview(ctx, st)
            last_time = time.perf_counter()
        if s.checkpoint_every > 0 and st.step % s.checkpoint_every == 0 and st.step < s.steps:
            save_checkpoint(ctx, st)
            last_time = time.perf_counter()
    st.model.eval()


def write_preview(ctx: LoopContext, st: TrainState) -> None:
    ctx.ckpt_dir.mkdir(parents=True, exist_ok=True)
    img = preview_grid(st.ema, ctx.preview_tokens, ctx.settings.resolution, ctx.schedule,
                       ctx.settings.seed + st.step, ctx.device, should_stop=ctx.stop)
    if ctx.stop():
        return
    path = ctx.ckpt_dir / f"preview-stage{ctx.stage}-{st.step:06d}.png"
    img.save(path)
    ctx.progress.emit("preview", stage=ctx.stage, step=st.step, path=str(path))
