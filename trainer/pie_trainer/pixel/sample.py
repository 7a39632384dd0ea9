"""`python -m pie_trainer sample`: the PyTorch reference sampler (previews, benchmarks).

DDIM (eta 0) with classifier-free guidance from pure noise, using the EMA
weights kept as weights.pt in a bundle or a checkpoint folder.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.device import default_threads, resolve_device
from ..core.errors import BadInput
from ..core.progress import log
from ..core.views import to_uint8
from .diffusion import Schedule, ddim_sample
from .model import NULL_TOKEN, SIZE_MULTIPLE
from .weights import WEIGHTS, load_weights


def resolve_token(spec: str, info: dict[str, object]) -> int:
    if spec == "null":
        return NULL_TOKEN
    if spec.isdigit():
        return int(spec)
    tokens = info.get("tokens") or {}
    for c in tokens.get("concepts", []) if isinstance(tokens, dict) else []:
        if spec in (c.get("identifier"), c.get("name"), c.get("role")):
            return int(c["id"])
    raise BadInput(f"no token {spec!r} in this model")


def run_sample(args: argparse.Namespace) -> None:
    folder = Path(args.bundle or args.checkpoint)
    wpath = folder / WEIGHTS
    if not wpath.is_file():
        raise BadInput(f"{folder} has no {WEIGHTS}")
    torch.set_num_threads(args.threads or default_threads())
    device = resolve_device(args.device)
    model, info = load_weights(wpath)
    model = model.to(device)
    res = int(info.get("resolution", 64))
    h, w = args.height or res, args.width or res
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise BadInput(f"--height and --width must be multiples of {SIZE_MULTIPLE}")
    token = resolve_token(args.token, info)
    sched = info.get("schedule") or {}
    schedule = Schedule(num_train_timesteps=int(sched.get("num_train_timesteps", 1000)),
                        beta_start=float(sched.get("beta_start", 1e-4)), beta_end=float(sched.get("beta_end", 0.02)),
                        beta_schedule=str(sched.get("beta_schedule", "linear")))
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.full((args.count,), token, dtype=torch.int64, device=device)
    x = ddim_sample(model, tokens, h, w, schedule, steps=args.steps, guidance=args.guidance,
                    null_token=NULL_TOKEN, generator=gen).cpu()
    cols = math.ceil(math.sqrt(args.count))
    rows = math.ceil(args.count / cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(args.count):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = to_uint8(x[i])
    Image.fromarray(grid).save(args.out)
    if args.npy:
        np.save(args.npy, x.numpy().astype(np.float32))
    log(f"wrote {args.count} samples of token {token} at {w}x{h} to {args.out}")
