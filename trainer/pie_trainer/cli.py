"""Command line: `python -m pie_trainer scene|subject|sample ...`.

The engine launches `scene` and `subject` with an argument vector and reads
the progress stream (schema/README.md) from stdout. Exit codes: 0 done,
1 internal error, 2 bad input, 3 cancelled (checkpoint kept).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from .errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_DONE, EXIT_INTERNAL, BadInput, Cancelled, is_disk_full
from .progress import Progress, claim_stdout, log
from .sd import cli as sd_cli
from .settings import PRESETS


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors become BadInput, so they reach the progress stream too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{self.prog}: {message}")


def _training_knobs(p: argparse.ArgumentParser, stage: str) -> None:
    d, q = PRESETS[stage]["default"], PRESETS[stage]["quick"]
    p.add_argument("--backbone", choices=("pixel-unet", "sd"), default=None,
                   help="pixel-unet: the small embedded model trained from scratch; sd: DreamBooth on a local "
                        "Stable Diffusion checkpoint (--base). Default: pixel-unet for a scene, the scene's "
                        "backbone for a subject")
    p.add_argument("--name", required=True, help="the concept's name in the library (a-z, 0-9, _ and -)")
    p.add_argument("--library", default=None,
                   help="the concept library (default: $PIE_HOME, else $XDG_DATA_HOME/pie, else ~/.local/share/pie)")
    p.add_argument("--quick", action="store_true",
                   help=f"the quick preset (about a minute: {q['steps']} steps) instead of the default "
                        f"({d['steps']} steps)")
    p.add_argument("--steps", type=_positive(int), help=f"training steps (default {d['steps']}, quick {q['steps']})")
    p.add_argument("--batch", type=_positive(int), help=f"images per step (default {d['batch']})")
    p.add_argument("--lr", type=_positive(float), help=f"AdamW learning rate (default {d['lr']}, quick {q['lr']})")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same device -> same weights (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when PyTorch sees a GPU, else cpu (default auto)")
    p.add_argument("--threads", type=_positive(int),
                   help="CPU threads (default: cores - 1, at least 1; dropped by one if the rate collapses)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto times a few steps of each and keeps the faster (default auto)")
    p.add_argument("--bench-steps", type=_non_negative_int, default=6,
                   help="timed steps per precision mode when --precision auto (0: fp32 without timing; default 6)")
    p.add_argument("--force", action="store_true", help="replace an existing concept of the same name")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint of a cancelled run")
    p.add_argument("--preview-every", type=_non_negative_int, default=None,
                   help="write a preview grid every N steps (0: never; default 250; pixel-unet only)")
    p.add_argument("--checkpoint-every", type=_non_negative_int, default=None,
                   help="write a resumable checkpoint every N steps (0: only when stopped; default 500; "
                        "sd: 200 with LoRA, 0 with full fine-tuning)")
    p.add_argument("--null-prob", type=float, default=None,
                   help="probability of the null token (sd: the empty prompt), for classifier-free guidance "
                        "(default 0.1; sd 0)")
    p.add_argument("--ema", type=float, default=None, help="largest EMA decay (default 0.999; pixel-unet only)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pie_trainer", description="pie's fine-tuning helper")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sc = sub.add_parser("scene", help="Stage I: learn a scene (the background image)")
    sc.add_argument("image", help="the scene photograph")
    _training_knobs(sc, "scene")
    sc.add_argument("--resolution", type=_positive(int),
                    help="side of the square training crops, a multiple of 4 (default 64, quick 32)")
    sc.add_argument("--scene-short-side", type=_positive(int),
                    help="short side the scene is learned at and sampled at (default 2 x resolution)")
    sc.add_argument("--channels", type=_positive(int), default=None,
                    help="UNet base channels (default 32; pixel-unet only)")
    sc.add_argument("--exclude", default=None, metavar="MASK",
                    help="greyscale image the size of the scene: pixels above 127 are never learned (filled in "
                         "and left out of the loss, here and in every subject's replay); at most 95%% may be "
                         "excluded (pixel-unet only)")
    sd_cli.add_options(sc, "scene", _positive, _non_negative_int)

    su = sub.add_parser("subject", help="Stage II: learn a subject, growing from a scene bundle")
    su.add_argument("image", help="the subject photograph")
    su.add_argument("--scene", required=True, help="name of the scene bundle (Stage I) to grow from")
    su.add_argument("--mask", default=None,
                    help="subject mask, same size as the image: white = subject (default: the image's alpha, "
                         "else the whole image)")
    _training_knobs(su, "subject")
    su.add_argument("--resolution", type=_positive(int),
                    help="working size of the subject view, a multiple of 4 (default: the scene's resolution)")
    su.add_argument("--replay", type=float, default=None,
                    help="fraction of each batch replaying the scene (prior preservation; default 0.5; "
                         "pixel-unet only)")
    sd_cli.add_options(su, "subject", _positive, _non_negative_int)

    sa = sub.add_parser("sample", help="PyTorch reference sampler (DDIM, classifier-free guidance)")
    src = sa.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="a bundle folder (its weights.pt)")
    src.add_argument("--checkpoint", help="a checkpoint folder, <library>/.checkpoints/<name> (its weights.pt)")
    sa.add_argument("--token", default=None,
                    help="token id, the concept's identifier or name, or 'null' (required for pixel-unet; sd: "
                         "whose prompt to draw, default the bundle's Add prompt)")
    sa.add_argument("--prompt", default=None, help="sd bundles: the prompt to draw (overrides --token)")
    sa.add_argument("--out", required=True, help="PNG grid to write")
    sa.add_argument("--npy", default=None, help="also write the raw samples, float32 [N,3,H,W] in [-1,1]")
    sa.add_argument("--count", type=_positive(int), default=4, help="number of samples (default 4)")
    sa.add_argument("--height", type=_positive(int), help="default: the model's resolution")
    sa.add_argument("--width", type=_positive(int), help="default: the model's resolution")
    sa.add_argument("--steps", type=_positive(int), default=50, help="DDIM steps (default 50)")
    sa.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    sa.add_argument("--threads", type=_positive(int))
    return parser


def main(argv: Sequence[str] | None = None, stdout_stream: object | None = None) -> int:
    """Run one command; returns the exit code. `stdout_stream` is for in-process tests."""
    stream = stdout_stream if stdout_stream is not None else claim_stdout()
    progress = Progress(stream)  # type: ignore[arg-type]
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        if args.command == "sample":
            from .library import read_manifest
            if args.bundle and (read_manifest(Path(args.bundle)) or {}).get("backbone") == "sd":
                from .sd.sample import run_sample as run_sd_sample
                run_sd_sample(args)
                return EXIT_DONE
            if args.token is None:
                raise BadInput("sample: --token is required")
            from .sample import run_sample
            run_sample(args)
            return EXIT_DONE
        return _train(args, progress)
    except BadInput as exc:
        progress.emit("error", kind="bad_input", message=str(exc))
        log(f"error: {exc}")
        return EXIT_BAD_INPUT
    except Cancelled as exc:
        progress.emit("cancelled", stage=exc.stage, step=exc.step, checkpoint=exc.checkpoint)
        log(f"cancelled at step {exc.step}; resume with --resume (checkpoint {exc.checkpoint})")
        return EXIT_CANCELLED
    except PermissionError as exc:
        msg = f"permission denied: cannot write {exc.filename or 'to the library'}; no bundle was written"
        progress.emit("error", kind="bad_input", message=msg)
        log(f"error: {msg}")
        return EXIT_BAD_INPUT
    except OSError as exc:
        if is_disk_full(exc):
            where = f" ({exc.filename})" if exc.filename else ""
            msg = f"the disk is full{where}: free some space and try again; no bundle was written"
            progress.emit("error", kind="bad_input", message=msg)
            log(f"error: {msg}")
            return EXIT_BAD_INPUT
        return _internal(progress, exc)
    except KeyboardInterrupt as exc:
        return _internal(progress, exc)
    except Exception as exc:  # noqa: BLE001 - everything else is a bug, reported as such
        return _internal(progress, exc)


def _internal(progress: Progress, exc: BaseException) -> int:
    traceback.print_exc(file=sys.stderr)
    progress.emit("error", kind="internal", message=f"{type(exc).__name__}: {exc}")
    return EXIT_INTERNAL


def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _train(args: argparse.Namespace, progress: Progress) -> int:
    # Everything that can be refused is checked before torch is imported.
    from .images import alpha_mask, load_image, load_mask
    from .library import NAME_RE, check_name, library_path, new_identifier, read_manifest, taken_identifiers

    stage = 1 if args.command == "scene" else 2
    name = check_name(args.name)
    library = library_path(args.library)
    if library.exists() and not library.is_dir():
        raise BadInput(f"the library {str(library)!r} is not a folder")
    if (library / name).exists() and not args.force:
        raise BadInput(f"a concept named {name!r} already exists in {library}; "
                       "choose another name or pass --force to replace it")
    backbone = args.backbone
    if stage == 2 and backbone is None:
        scene_manifest = read_manifest(library / args.scene) if NAME_RE.match(args.scene) else None
        backbone = (scene_manifest or {}).get("backbone")
        backbone = backbone if backbone in ("pixel-unet", "sd") else None
    backbone = backbone or "pixel-unet"
    sd_cli.refuse_mixed(args, backbone)
    if backbone == "pixel-unet":
        for opt, default in (("null_prob", 0.1), ("ema", 0.999), ("preview_every", 250), ("checkpoint_every", 500),
                             ("channels", 32), ("replay", 0.5)):
            if getattr(args, opt, None) is None and hasattr(args, opt):
                setattr(args, opt, default)
    if args.null_prob is not None and not 0.0 <= args.null_prob < 1.0:
        raise BadInput(f"--null-prob must be in [0, 1), got {args.null_prob}")
    if backbone == "sd":
        return _train_sd(args, progress, stage, name, library)
    if args.resolution is not None and args.resolution % 4:
        raise BadInput(f"--resolution must be a multiple of 4, got {args.resolution}")
    if not 0.0 <= args.null_prob < 1.0:
        raise BadInput(f"--null-prob must be in [0, 1), got {args.null_prob}")
    if not 0.0 <= args.ema < 1.0:
        raise BadInput(f"--ema must be in [0, 1), got {args.ema}")
    preset_name = "quick" if args.quick else "default"
    preset = PRESETS[args.command][preset_name]
    image = load_image(args.image, "scene image" if stage == 1 else "subject image")
    if image.downscaled:
        log(f"{args.image} is {image.source_size[0]}x{image.source_size[1]}; working on a downscaled copy "
            f"({image.image.size[0]}x{image.image.size[1]})")

    parent = None
    mask = None
    mask_sha = None
    exclude = None
    if stage == 1 and args.exclude:
        from .images import load_exclude
        exclude = load_exclude(args.exclude, image)
        log(f"exclude mask {args.exclude}: {exclude.fraction:.1%} of the scene is never learned")
    if stage == 2:
        from .bundle import load_scene_bundle
        if args.scene == name:
            raise BadInput("the subject needs a name of its own, different from the scene's")
        parent = load_scene_bundle(library, check_name(args.scene))
        if args.mask:
            mask = load_mask(args.mask, image)
            mask_sha = _file_sha256(args.mask)
        else:
            mask = alpha_mask(image)
            if mask is not None:
                log("using the subject image's alpha channel as its mask")
        if not 0.0 < args.replay < 1.0:
            raise BadInput(f"--replay must be between 0 and 1, got {args.replay}")

    # Heavy imports from here on. cuBLAS is only reproducible with a fixed workspace,
    # which must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    from .settings import Settings
    from .speed import default_threads, resolve_device
    from .stages import Runtime, execute, scene_job, subject_job
    from .train import StopFlag

    stop = StopFlag()
    stop.install()
    device = resolve_device(args.device)
    if device.type == "cuda":
        # Same seed, same device, same weights: deterministic kernels (a small cost for this net).
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    rt = Runtime(device=device, threads=threads, precision=args.precision, bench_steps=args.bench_steps,
                 force=args.force, resume=args.resume)
    common = dict(steps=args.steps or preset["steps"], batch=args.batch or preset["batch"],
                  lr=args.lr or preset["lr"], seed=args.seed, null_prob=args.null_prob, ema_max=args.ema,
                  preview_every=args.preview_every, checkpoint_every=args.checkpoint_every, preset=preset_name)
    taken = taken_identifiers(library)
    saved: Settings | None = None
    if args.resume:
        # A resumed run keeps the settings it began with, whatever the command line says now.
        from .checkpoint import STATE
        from .library import checkpoint_dir
        from .checkpoint import load_state
        ckdir = checkpoint_dir(library, name)
        if not os.path.lexists(ckdir / STATE):
            raise BadInput(f"there is no checkpoint to resume for {name!r} (looked in {ckdir})")
        saved = Settings.from_dict(load_state(ckdir, library)["settings"])
        if saved.stage != stage:
            raise BadInput(f"the checkpoint for {name!r} is of stage {saved.stage}, not {stage}")
    if stage == 1:
        resolution = args.resolution or preset["resolution"]
        settings = Settings(stage=1, resolution=resolution,
                            scene_short_side=args.scene_short_side or 2 * resolution,
                            base_channels=args.channels, **common)
        if settings.scene_short_side < resolution:
            raise BadInput(f"--scene-short-side ({settings.scene_short_side}) must be at least the resolution "
                           f"({resolution})")
        settings = saved or settings
        ident = new_identifier(args.seed, taken)
        job = scene_job(name, library, image, settings, ident, exclude)
    else:
        assert parent is not None
        pm = parent.manifest["model"]
        if common["batch"] < 2:
            raise BadInput("--batch must be at least 2 for a subject (each batch mixes subject and scene)")
        settings = Settings(stage=2, resolution=args.resolution or pm["resolution"],
                            scene_short_side=pm["scene_short_side"], base_channels=pm["base_channels"],
                            replay=args.replay, **common)
        settings = saved or settings
        taken |= {c["identifier"] for c in parent.manifest["tokens"]["concepts"]}
        ident = new_identifier(args.seed + 1, taken)
        job = subject_job(name, library, parent, image, mask, mask_sha, settings, ident)
    if args.resume:
        # The identifier chosen when the run began is kept.
        from .library import IDENTIFIER_RE, read_checkpoint_meta
        ck_ident = (read_checkpoint_meta(library, name) or {}).get("identifier")
        if isinstance(ck_ident, str) and IDENTIFIER_RE.match(ck_ident):
            job.concepts[-1]["identifier"] = ck_ident
    execute(job, rt, progress, stop)
    return EXIT_DONE


def _train_sd(args: argparse.Namespace, progress: Progress, stage: int, name: str, library: Path) -> int:
    from .images import alpha_mask, load_image, load_mask
    from .library import check_name

    image = load_image(args.image, "scene image" if stage == 1 else "subject image")
    if image.downscaled:
        log(f"{args.image} is {image.source_size[0]}x{image.source_size[1]}; working on a downscaled copy "
            f"({image.image.size[0]}x{image.image.size[1]})")
    mask = None
    mask_sha = None
    if stage == 2:
        check_name(args.scene)
        if args.scene == name:
            raise BadInput("the subject needs a name of its own, different from the scene's")
        if args.mask:
            mask = load_mask(args.mask, image)
            mask_sha = _file_sha256(args.mask)
        else:
            mask = alpha_mask(image)
            if mask is not None:
                log("using the subject image's alpha channel as its mask")
    return sd_cli.train(args, progress, stage=stage, name=name, library=library, image=image, mask=mask,
                        mask_sha=mask_sha)


def console_main() -> None:
    sys.exit(main())
