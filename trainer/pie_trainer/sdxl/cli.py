"""The `--backbone sdxl` side of `python -m pie_trainer scene|subject`.

sdxl takes the sd backbone's options (sd/cli.py declares them once for both: `add_options`
is the same function, and `cli.py` declares each distinct one once) and the same run,
with SDXL's job (sdxl/run.py). What sdxl does not do is refused here, before any image
is read.
"""

from __future__ import annotations

import argparse

from ..core.errors import BadInput
from ..core.images import TrainInputs
from ..core.progress import Progress
from ..sd import cli as sd_cli
from . import NAME

OPTIONS = sd_cli.OPTIONS
INSTEAD = sd_cli.INSTEAD
add_options = sd_cli.add_options


def check(args: argparse.Namespace) -> None:
    if args.train_text_encoder:
        raise BadInput("--train-text-encoder is not supported by the sdxl backbone (it trains LoRA on the UNet; "
                       "both text encoders stay frozen); leave it out")
    if args.optimize == "on":
        raise BadInput("--optimize on is not available for the sdxl backbone yet (the fused CUDA graphs are made "
                       "for sd's UNet and text encoder); leave --optimize out")
    sd_cli.check(args)


def train(args: argparse.Namespace, progress: Progress, inputs: TrainInputs) -> int:
    return sd_cli.train_on(NAME, args, progress, inputs)


def run_sample(args: argparse.Namespace) -> None:
    sd_cli.run_sample(args)
