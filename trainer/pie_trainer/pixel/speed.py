"""Choosing the pixel-unet's precision on the machine at hand: a few timed steps
per mode (fp32; bf16 autocast + channels_last) at start-up, on a throwaway copy
of the model, keeping the faster one."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable

import torch
from torch import nn

MODES = ("fp32", "bf16")


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager[object]:
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(mode: str) -> torch.memory_format:
    return torch.channels_last if mode == "bf16" else torch.contiguous_format


def bf16_usable(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return True


def time_modes(
    model: nn.Module,
    make_inputs: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device,
    modes: tuple[str, ...],
    steps: int,
    warmup: int = 2,
) -> dict[str, float]:
    """Steps/s of forward + backward + AdamW for each mode, on a copy of the model."""
    rates: dict[str, float] = {}
    for mode in modes:
        m = copy.deepcopy(model).to(device).to(memory_format=memory_format(mode))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        x, t, tok = make_inputs()
        x = x.to(device).to(memory_format=memory_format(mode))
        t, tok = t.to(device), tok.to(device)
        start = 0.0
        for i in range(warmup + steps):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            with autocast(device, mode):
                loss = (m(x, t, tok).float() - x).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        rates[mode] = steps / max(time.perf_counter() - start, 1e-9)
        del m, opt
    return rates


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
