"""The pixel-unet side of `python -m pie_trainer scene|subject`: its options, the
checks that can refuse a run before torch is imported, and the run itself."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from ..core.errors import EXIT_DONE, BadInput
from ..core.images import TrainInputs
from ..core.progress import Progress, log
from . import NAME
from .settings import PRESETS

# Options only this backbone uses (argparse destinations; their default is None, so given = not None).
OPTIONS = ("channels", "ema", "replay", "scene_short_side", "exclude", "precision", "lr_schedule", "warmup", "lr_min",
           "min_snr", "coarse")
# Options every backbone has whose default depends on the backbone.
DEFAULTS = {"null_prob": 0.1, "ema": 0.999, "preview_every": 250, "checkpoint_every": 500, "channels": 32,
            "replay": 0.5, "precision": "auto", "lr_schedule": "constant", "warmup": 0.0, "lr_min": 0.0,
            "min_snr": 0.0, "coarse": 0.0}


def add_options(p: argparse.ArgumentParser, stage: str, positive: Callable[[type], Any],
                non_negative: Callable[[str], int]) -> None:
    g = p.add_argument_group("pixel-unet backbone (the default for a scene)")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="auto times a few steps of each and keeps the faster (default auto)")
    g.add_argument("--bench-steps", type=non_negative, default=6,
                   help="timed steps per precision mode when --precision auto (0: fp32 without timing; default 6)")
    g.add_argument("--ema", type=float, default=None, help="largest EMA decay (default 0.999; pixel-unet only)")
    g.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                   help="constant, or cosine: a linear warm-up (--warmup) then a cosine down to --lr-min; it "
                        "follows the steps done or the --minutes used, whichever is further (default constant)")
    g.add_argument("--warmup", type=float, default=None,
                   help="cosine: fraction of the run spent warming up, in [0, 1) (default 0)")
    g.add_argument("--lr-min", type=float, default=None,
                   help="cosine: the floor, as a fraction of --lr, in [0, 1] (default 0)")
    g.add_argument("--min-snr", type=float, default=None, metavar="GAMMA",
                   help="min-SNR loss weighting with this gamma (0: off; default 0)")
    if stage == "scene":
        g.add_argument("--scene-short-side", type=positive(int),
                       help="short side the scene is learned at and sampled at (default 2 x resolution)")
        g.add_argument("--coarse", type=float, default=None,
                       help="fraction of the run first trained on crops of half the resolution (same pixels, "
                            "smaller window; a quarter of the cost per step), in [0, 1) (default 0)")
        g.add_argument("--channels", type=positive(int), default=None,
                       help="UNet base channels (default 32; pixel-unet only)")
        g.add_argument("--exclude", default=None, metavar="MASK",
                       help="greyscale image the size of the scene: pixels above 127 are never learned (filled in "
                            "and left out of the loss, here and in every subject's replay); at most 95%% may be "
                            "excluded (pixel-unet only)")
    else:
        g.add_argument("--replay", type=float, default=None,
                       help="fraction of each batch replaying the scene (prior preservation; default 0.5; "
                            "pixel-unet only)")


def check(args: argparse.Namespace) -> None:
    """Fill in this backbone's defaults and refuse values out of range, before any image is read."""
    for opt, default in DEFAULTS.items():
        if hasattr(args, opt) and getattr(args, opt) is None:
            setattr(args, opt, default)
    if args.resolution is not None and args.resolution % 4:
        raise BadInput(f"--resolution must be a multiple of 4, got {args.resolution}")
    if not 0.0 <= args.ema < 1.0:
        raise BadInput(f"--ema must be in [0, 1), got {args.ema}")
    for opt in ("warmup", "coarse"):
        if hasattr(args, opt) and not 0.0 <= getattr(args, opt) < 1.0:
            raise BadInput(f"--{opt} must be in [0, 1), got {getattr(args, opt)}")
    if not 0.0 <= args.lr_min <= 1.0:
        raise BadInput(f"--lr-min must be in [0, 1], got {args.lr_min}")
    if not (args.min_snr >= 0.0 and math.isfinite(args.min_snr)):
        raise BadInput(f"--min-snr must be 0 (off) or positive, got {args.min_snr}")
    if args.command == "subject" and not 0.0 < args.replay < 1.0:
        raise BadInput(f"--replay must be between 0 and 1, got {args.replay}")


def train(args: argparse.Namespace, progress: Progress, inputs: TrainInputs) -> int:
    from ..core import resume
    from ..core.library import new_identifier, taken_identifiers

    stage, name, library, image = inputs.stage, inputs.name, inputs.library, inputs.image
    preset_name = "quick" if args.quick else "default"
    preset = PRESETS[args.command][preset_name]
    exclude = None
    parent = exclude_file = None
    if stage == 1 and args.exclude:
        from ..core.images import load_exclude
        exclude = load_exclude(args.exclude, image)
        log(f"exclude mask {args.exclude}: {exclude.fraction:.1%} of the scene is never learned")
    if stage == 2:
        from .stages import load_parent
        parent, exclude_file = load_parent(library, args.scene)
    common = dict(steps=args.steps or preset["steps"], batch=args.batch or preset["batch"],
                  lr=args.lr or preset["lr"], seed=args.seed, null_prob=args.null_prob, ema_max=args.ema,
                  preview_every=args.preview_every, checkpoint_every=args.checkpoint_every, preset=preset_name,
                  lr_schedule=args.lr_schedule, warmup=args.warmup, lr_min=args.lr_min, min_snr=args.min_snr)
    if stage == 1:
        resolution = args.resolution or preset["resolution"]
        if (args.scene_short_side or 2 * resolution) < resolution:
            raise BadInput(f"--scene-short-side ({args.scene_short_side}) must be at least the resolution "
                           f"({resolution})")
    elif common["batch"] < 2:
        raise BadInput("--batch must be at least 2 for a subject (each batch mixes subject and scene)")

    from ..core.device import start
    from ..core.run import Runtime, budget_seconds, execute
    from .settings import Settings
    from .stages import scene_job, subject_job

    stop, device, threads = start(args.device, args.threads, deterministic=True)
    saved = resume.open_checkpoint(library, name, stage, None) if args.resume else None
    taken = taken_identifiers(library)
    if stage == 1:
        settings = Settings(stage=1, resolution=resolution, scene_short_side=args.scene_short_side or 2 * resolution,
                            base_channels=args.channels, coarse=args.coarse, **common)
        settings = Settings.from_dict(saved["settings"]) if saved else settings
        ident = (resume.kept_identifier(library, name) if saved else None) or new_identifier(args.seed, taken)
        job = scene_job(name, library, image, settings, ident, exclude)
    else:
        assert parent is not None
        pm = parent.manifest["model"]
        settings = Settings(stage=2, resolution=args.resolution or pm["resolution"],
                            scene_short_side=pm["scene_short_side"], base_channels=pm["base_channels"],
                            replay=args.replay, **common)
        settings = Settings.from_dict(saved["settings"]) if saved else settings
        taken |= {c["identifier"] for c in parent.manifest["tokens"]["concepts"]}
        ident = (resume.kept_identifier(library, name) if saved else None) or new_identifier(args.seed + 1, taken)
        job = subject_job(name, library, parent, exclude_file, image, inputs.mask, inputs.mask_sha256, settings,
                          ident)
    job.requested_precision, job.bench_steps = args.precision, args.bench_steps
    rt = Runtime(device=device, threads=threads, force=args.force, budget_s=budget_seconds(args))
    execute(job, rt, progress, stop, saved)
    return EXIT_DONE


def run_sample(args: argparse.Namespace) -> None:
    if args.token is None:
        raise BadInput("sample: --token is required")
    from .sample import run_sample as sample
    sample(args)


__all__ = ["NAME", "OPTIONS", "add_options", "check", "train", "run_sample"]
