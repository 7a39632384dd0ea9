"""DDPM training schedule (epsilon prediction) and the DDIM reference sampler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Schedule:
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"

    def betas(self) -> torch.Tensor:
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            return torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float64)
        if self.beta_schedule == "scaled_linear":
            return torch.linspace(self.beta_start ** 0.5, self.beta_end ** 0.5, n, dtype=torch.float64) ** 2
        raise ValueError(f"unknown beta schedule {self.beta_schedule!r}")

    def alphas_cumprod(self) -> torch.Tensor:
        """float64 [T]; the engine derives the same numbers from the manifest."""
        return torch.cumprod(1.0 - self.betas(), dim=0)

    def manifest(self) -> dict[str, object]:
        d = asdict(self)
        return {"type": "ddpm", "num_train_timesteps": d["num_train_timesteps"], "beta_schedule": d["beta_schedule"],
                "beta_start": d["beta_start"], "beta_end": d["beta_end"], "prediction_type": "epsilon"}


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(x0.device)[t].to(x0.dtype)[:, None, None, None]
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def ddim_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """Evenly spaced, descending, from T-1 down to 0."""
    steps = max(1, min(steps, num_train_timesteps))
    if steps == 1:
        return [num_train_timesteps - 1]
    return [round((num_train_timesteps - 1) * (1 - i / (steps - 1))) for i in range(steps)]


@torch.no_grad()
def ddim_sample(
    model: nn.Module,
    tokens: torch.Tensor,
    height: int,
    width: int,
    schedule: Schedule,
    steps: int = 50,
    guidance: float = 3.0,
    null_token: int = 0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """DDIM (eta = 0) with classifier-free guidance; x0 clamped to [-1, 1].

    eps = eps(null) + guidance * (eps(token) - eps(null)). Returns [N,3,H,W] in [-1, 1].
    """
    device = tokens.device
    n = tokens.shape[0]
    acp = schedule.alphas_cumprod().to(torch.float32).to(device)
    if noise is None:
        noise = torch.randn((n, 3, height, width), generator=generator, dtype=torch.float32).to(device)
    x = noise.to(device)
    ts = ddim_timesteps(schedule.num_train_timesteps, steps)
    nulls = torch.full_like(tokens, null_token)
    for i, t in enumerate(ts):
        if should_stop is not None and should_stop():
            break
        tt = torch.full((n,), t, dtype=torch.int64, device=device)
        if guidance == 1.0:
            eps = model(x, tt, tokens).float()
        else:
            both = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([tokens, nulls])).float()
            eps_c, eps_u = both[:n], both[n:]
            eps = eps_u + guidance * (eps_c - eps_u)
        a = acp[t]
        a_prev = acp[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, device=device)
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1.0, 1.0)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x.clamp(-1.0, 1.0)
