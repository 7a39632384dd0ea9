"""Command line: `python -m pie_trainer scene|subject|sample ...`.

The engine launches `scene` and `subject` with an argument vector and reads
the progress stream (schema/README.md) from stdout. Exit codes: 0 done,
1 internal error, 2 bad input, 3 cancelled (checkpoint kept).

The options every backbone shares are declared here, each backbone's own by
its package (`<backbone>/cli.py`: `add_options`, `OPTIONS`, `check`, `train`,
`run_sample`); this module checks what is common to every run (name, library,
images, masks) and hands the run to the backbone chosen.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from .core.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_DONE, EXIT_INTERNAL, BadInput, Cancelled, is_disk_full
from .core.images import TrainInputs
from .core.progress import Progress, claim_stdout, log
from .pixel.settings import PRESETS

# Backbone name -> its package; a scene's default is the first.
BACKBONES = {"pixel-unet": "pixel", "sd": "sd", "sdxl": "sdxl"}


def backbone_cli(name: str) -> ModuleType:
    """The backbone's command-line module (importing it imports no torch)."""
    return importlib.import_module(f".{BACKBONES[name]}.cli", __package__)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
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


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of minutes, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors become BadInput, so they reach the progress stream too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{self.prog}: {message}")


def _training_knobs(p: argparse.ArgumentParser, stage: str) -> None:
    d, q = PRESETS[stage]["default"], PRESETS[stage]["quick"]
    p.add_argument("--backbone", choices=tuple(BACKBONES), default=None,
                   help="pixel-unet: the small embedded model trained from scratch; sd: DreamBooth on a local "
                        "Stable Diffusion 1.x/2.x checkpoint (--base); sdxl: the same on a local Stable Diffusion "
                        "XL checkpoint. Default: pixel-unet for a scene, the scene's "
                        "backbone for a subject")
    p.add_argument("--name", required=True, help="the concept's name in the library (a-z, 0-9, _ and -)")
    p.add_argument("--library", default=None,
                   help="the concept library (default: $PIE_HOME, else $XDG_DATA_HOME/pie, else ~/.local/share/pie)")
    p.add_argument("--quick", action="store_true",
                   help=f"the quick preset (about a minute: {q['steps']} steps) instead of the default "
                        f"({d['steps']} steps)")
    p.add_argument("--steps", type=_positive(int), help=f"training steps (default {d['steps']}, quick {q['steps']})")
    p.add_argument("--minutes", type=_minutes, default=None, metavar="N",
                   help="time budget for the whole run, bundle included: training stops in time to write the "
                        "bundle from the EMA model at that step (default: none, all the steps run)")
    p.add_argument("--batch", type=_positive(int), help=f"images per step (default {d['batch']})")
    p.add_argument("--lr", type=_positive(float), help=f"AdamW learning rate (default {d['lr']}, quick {q['lr']})")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: same seed, same device -> same weights (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when PyTorch sees a GPU, else cpu (default auto)")
    p.add_argument("--threads", type=_positive(int),
                   help="CPU threads (default: cores - 1, at least 1; dropped by one if the rate collapses)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pie_trainer", description="pie's fine-tuning helper")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sc = sub.add_parser("scene", help="Stage I: learn a scene (the background image)")
    sc.add_argument("image", help="the scene photograph")
    _training_knobs(sc, "scene")
    sc.add_argument("--resolution", type=_positive(int),
                    help="side of the square training crops, a multiple of 4 (default 64, quick 32; sd: the base's "
                         "native size; sdxl: 1024)")

    su = sub.add_parser("subject", help="Stage II: learn a subject, growing from a scene bundle")
    su.add_argument("image", help="the subject photograph")
    su.add_argument("--scene", required=True, help="name of the scene bundle (Stage I) to grow from")
    su.add_argument("--mask", default=None,
                    help="subject mask, same size as the image: white = subject (default: the image's alpha, "
                         "else the whole image)")
    _training_knobs(su, "subject")
    su.add_argument("--resolution", type=_positive(int),
                    help="working size of the subject view, a multiple of 4 (default: the scene's resolution)")
    declared: list[object] = []
    for name in BACKBONES:
        add = backbone_cli(name).add_options
        if add in declared:   # a backbone taking another's options (sdxl takes sd's): declared once
            continue
        declared.append(add)
        for p, stage in ((sc, "scene"), (su, "subject")):
            add(p, stage, _positive, _non_negative_int)

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


def main(argv: Sequence[str] | None = None, stdout_stream: IO[str] | None = None) -> int:
    """Run one command; returns the exit code. `stdout_stream` is for in-process tests."""
    stream = stdout_stream if stdout_stream is not None else claim_stdout()
    progress = Progress(stream)
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        if args.command == "sample":
            _sample(args)
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


def _sample(args: argparse.Namespace) -> None:
    """A bundle is sampled by its own backbone; a checkpoint folder is always a pixel-unet one."""
    from .core.library import read_manifest
    backbone = (read_manifest(Path(args.bundle)) or {}).get("backbone") if args.bundle else None
    backbone_cli(backbone if backbone in BACKBONES else next(iter(BACKBONES))).run_sample(args)


def _internal(progress: Progress, exc: BaseException) -> int:
    traceback.print_exc(file=sys.stderr)
    progress.emit("error", kind="internal", message=f"{type(exc).__name__}: {exc}")
    return EXIT_INTERNAL


def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _train(args: argparse.Namespace, progress: Progress) -> int:
    # Everything that can be refused is checked before torch is imported.
    from .core.library import NAME_RE, already_exists, check_name, library_path, read_manifest

    stage = 1 if args.command == "scene" else 2
    name = check_name(args.name)
    library = library_path(args.library)
    if library.exists() and not library.is_dir():
        raise BadInput(f"the library {str(library)!r} is not a folder")
    if (library / name).exists() and not args.force:
        raise already_exists(name, library)
    backbone = args.backbone
    if stage == 2 and backbone is None:
        scene_manifest = read_manifest(library / args.scene) if NAME_RE.match(args.scene) else None
        backbone = (scene_manifest or {}).get("backbone")
        backbone = backbone if backbone in BACKBONES else None
    backbone = backbone or next(iter(BACKBONES))
    _refuse_other_options(args, backbone)
    if args.null_prob is not None and not 0.0 <= args.null_prob < 1.0:
        raise BadInput(f"--null-prob must be in [0, 1), got {args.null_prob}")
    chosen = backbone_cli(backbone)
    chosen.check(args)
    return int(chosen.train(args, progress, _inputs(args, stage, name, library)))


def _refuse_other_options(args: argparse.Namespace, chosen: str) -> None:
    """An option given explicitly that only another backbone uses is refused, with the one that uses it."""
    own = backbone_cli(chosen)
    for other in BACKBONES:
        if other == chosen:
            continue
        bad = [o for o in backbone_cli(other).OPTIONS if o not in own.OPTIONS and getattr(args, o, None) is not None]
        if not bad:
            continue
        flags = ", ".join("--" + o.replace("_", "-") for o in bad)
        instead = getattr(own, "INSTEAD", {})
        hints = "".join(f"; use {instead[o]} instead of --{o.replace('_', '-')}" for o in bad if o in instead)
        raise BadInput(f"--backbone {chosen} does not use {flags} ({flags} {'needs' if len(bad) == 1 else 'need'} "
                       f"--backbone {other}{hints})")


def _inputs(args: argparse.Namespace, stage: int, name: str, library: Path) -> TrainInputs:
    """The image (and for a subject its mask), loaded and checked for every backbone alike."""
    from .core.images import alpha_mask, load_image, load_mask
    from .core.library import check_name

    image = load_image(args.image, "scene image" if stage == 1 else "subject image")
    if image.downscaled:
        log(f"{args.image} is {image.source_size[0]}x{image.source_size[1]}; working on a downscaled copy "
            f"({image.image.size[0]}x{image.image.size[1]})")
    inputs = TrainInputs(stage=stage, name=name, library=library, image=image)
    if stage == 2:
        check_name(args.scene)
        if args.scene == name:
            raise BadInput("the subject needs a name of its own, different from the scene's")
        if args.mask:
            inputs.mask = load_mask(args.mask, image)
            inputs.mask_sha256 = _file_sha256(args.mask)
        else:
            inputs.mask = alpha_mask(image)
            if inputs.mask is not None:
                log("using the subject image's alpha channel as its mask")
    return inputs


def console_main() -> None:
    sys.exit(main())
