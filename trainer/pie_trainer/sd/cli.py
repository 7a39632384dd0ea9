"""The `--backbone sd` side of `python -m pie_trainer scene|subject` (and of `--backbone sdxl`,
which takes the same options: sdxl/cli.py).

`add_options` declares the sd knobs on both sub-commands (defaults None, so
another backbone can refuse them); `train` checks everything that can be
refused before torch or diffusers is imported, then runs the run skeleton
(`core.run.execute`) on an `SdJob` (sdxl: its `XlJob`).
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.bundle import SCENE, concept
from ..core.errors import EXIT_DONE, BadInput
from ..core.images import TrainInputs
from ..core.progress import Progress, log
from . import NAME, WEIGHTS
from .optimize import CHOICES
from .optimize import resolve as resolve_optimize
from .settings import DEFAULT_LORA_RANK, LR_FULL, LR_LORA, SCENE_CLASS, SD_PRESETS, SUBJECT_CLASS, SdSettings, prompt

CLASS_WORD_HELP = "lowercase letters and spaces, at most 32 characters"
# Options only this backbone uses (argparse destinations; their default is None, so given = not None).
OPTIONS = ("base", "class_word", "lora_rank", "lora_alpha", "train_text_encoder", "mixed_precision",
           "gradient_checkpointing", "use_8bit_adam", "gradient_accumulation_steps", "prior_loss_weight",
           "export_precision", "optimize", "preview_steps")
# What to use instead of another backbone's option.
INSTEAD = {"precision": "--mixed-precision"}


def add_options(p: argparse.ArgumentParser, stage: str, positive: Callable[[type], Any],
                non_negative: Callable[[str], int]) -> None:
    g = p.add_argument_group("sd and sdxl backbones (--backbone sd, --backbone sdxl)")
    g.add_argument("--base", default=None, metavar="DIR|FILE",
                   help="the local Stable Diffusion checkpoint. sd (1.x/2.x): a folder in diffusers layout "
                        "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single "
                        ".safetensors file (A1111/ComfyUI layout, converted once into pie's cache); sdxl: an SDXL "
                        "folder in diffusers layout (also text_encoder_2/, tokenizer_2/) or an SDXL 1.0 base "
                        "single file; never a hub id"
                        + ("" if stage == "scene" else "; default: the scene bundle's base"))
    default_class = SCENE_CLASS if stage == "scene" else SUBJECT_CLASS
    g.add_argument("--class-word", default=None, metavar="WORD",
                   help=f"the class noun trained with the identifier, 'a photo of <id> <class word>' "
                        f"(default {default_class!r}; e.g. 'dog' for a dog)")
    g.add_argument("--lora-rank", type=non_negative, default=None, metavar="R",
                   help=f"LoRA rank of the UNet (and text encoder) adapters; 0 = full fine-tuning of the UNet "
                        f"(default {DEFAULT_LORA_RANK}" + ("" if stage == "scene" else "; a subject keeps its scene's")
                        + ")")
    g.add_argument("--lora-alpha", type=positive(float), default=None, metavar="F",
                   help="LoRA alpha (default: the rank)")
    g.add_argument("--train-text-encoder", action="store_true", default=None,
                   help="also fine-tune the text encoder (LoRA or full, like the UNet; sd only)")
    g.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default=None,
                   help="autocast precision; trained weights stay fp32 (default auto: fp16 on CUDA, bf16 on a "
                        "CPU with native bf16, else no)")
    g.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in the backward pass: much less GPU memory, ~20-30%% slower")
    g.add_argument("--use-8bit-adam", action="store_true", default=None,
                   help="bitsandbytes' 8-bit AdamW (needs the bitsandbytes package and CUDA)")
    g.add_argument("--gradient-accumulation-steps", type=positive(int), default=None, metavar="N",
                   help="micro-batches per optimizer step (default 1)")
    if stage == "subject":
        g.add_argument("--prior-loss-weight", type=float, default=None, metavar="F",
                       help="weight of the scene replayed with its Stage I prompt (prior preservation; default 1.0)")
    g.add_argument("--preview-steps", type=non_negative, default=None, metavar="N",
                   help="DDIM steps of the bundle's preview.png, drawn with the exported graphs on the CPU "
                        "(0: no preview; default 15)")
    g.add_argument("--export-precision", choices=("auto", "fp32", "fp16"), default=None,
                   help="weights of the exported graphs (default auto: fp16 when training on CUDA, else fp32); "
                        "graph inputs and outputs are float32 either way")
    g.add_argument("--optimize", choices=CHOICES, default=None,
                   help="fuse the exported graphs for CUDA with ONNX Runtime's transformer optimizer (fused "
                        "attention, GroupNorm, GELU and NHWC convolutions; the bundle then runs on CUDA only): "
                        "on needs a float16 export (default auto: on when exporting float16 on CUDA; sdxl: off, "
                        "on is refused)")


def _class_word(text: str) -> str:
    import re
    word = " ".join(text.split())
    if not re.match(r"^[a-z][a-z ]{0,31}$", word):
        raise BadInput(f"--class-word {text!r} is not allowed: use {CLASS_WORD_HELP}")
    return word


def check(args: argparse.Namespace) -> None:
    """Refuse values out of range before any image is read (the rest needs the base checkpoint)."""
    if getattr(args, "prior_loss_weight", None) is not None and args.prior_loss_weight < 0:
        raise BadInput(f"--prior-loss-weight must be 0 or more, got {args.prior_loss_weight}")
    if args.optimize == "on" and args.export_precision == "fp32":
        resolve_optimize("on", "float32", False)


def train(args: argparse.Namespace, progress: Progress, inputs: TrainInputs) -> int:
    return train_on(NAME, args, progress, inputs)


def train_on(backbone: str, args: argparse.Namespace, progress: Progress, inputs: TrainInputs) -> int:
    """A run of `backbone`: "sd", or "sdxl" (the same run with SDXL's job, sdxl/run.py)."""
    from ..core import resume
    from ..core.library import new_identifier, taken_identifiers
    from .base import OtherBase, check_base

    xl = backbone == "sdxl"   # what it refuses is refused by sdxl/cli.py's check, before this

    stage, name, library, image = inputs.stage, inputs.name, inputs.library, inputs.image
    preset_name = "quick" if args.quick else "default"
    preset = SD_PRESETS[args.command][preset_name]
    parent = None
    if stage == 2:
        from .run import load_scene  # imports torch: fine, the cheap checks are done
        parent = load_scene(library, args.scene, backbone)
        pm = parent.manifest
        base_arg = args.base or pm["model"]["base"].get("path")
        if not base_arg:
            raise BadInput(f"the scene bundle {args.scene!r} does not record its base checkpoint; pass --base DIR")
        want = pm["model"]["base"].get("fingerprint")
        try:
            base = check_base(base_arg, expect=want or None, backbone=backbone)
        except OtherBase:
            raise BadInput(f"the base checkpoint {str(Path(base_arg).expanduser().resolve())!r} is not the one the "
                           f"scene {args.scene!r} was trained on ({pm['model']['base'].get('path')}), or it changed "
                           "since") from None
        ptrain = pm["training"]
        if args.lora_rank is not None and args.lora_rank != ptrain["lora_rank"]:
            raise BadInput(f"the scene {args.scene!r} was trained with --lora-rank {ptrain['lora_rank']}; a subject "
                           "continues the same weights, so it keeps that rank (leave --lora-rank out)")
        lora_rank, lora_alpha = int(ptrain["lora_rank"]), float(ptrain["lora_alpha"])
        if args.lora_alpha is not None and args.lora_alpha != lora_alpha:
            raise BadInput(f"the scene {args.scene!r} was trained with --lora-alpha {lora_alpha}; leave it out")
        train_te = bool(args.train_text_encoder) or bool(ptrain.get("train_text_encoder"))
        if ptrain.get("train_text_encoder") and not args.train_text_encoder:
            log("the scene's text encoder was fine-tuned, so the subject fine-tunes it too")
        resolution = args.resolution or int(pm["model"]["resolution"])
    else:
        if not args.base and xl:
            raise BadInput("--backbone sdxl needs --base DIR: a local Stable Diffusion XL checkpoint, a folder in "
                           "diffusers layout")
        if not args.base:
            raise BadInput("--backbone sd needs --base DIR or --base FILE.safetensors: a local Stable Diffusion "
                           "checkpoint, a folder in diffusers layout or a single file")
        base = check_base(args.base, backbone=backbone)
        lora_rank = DEFAULT_LORA_RANK if args.lora_rank is None else args.lora_rank
        lora_alpha = args.lora_alpha or float(max(1, lora_rank))
        train_te = bool(args.train_text_encoder)
        from ..sdxl import DEFAULT_RESOLUTION as XL_RESOLUTION
        resolution = args.resolution or (XL_RESOLUTION if xl else base.native_resolution)
    if resolution % base.size_multiple or resolution < base.size_multiple:
        raise BadInput(f"--resolution must be a multiple of {base.size_multiple} for this checkpoint "
                       f"({base.name}), got {resolution}")
    if args.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
        raise BadInput("--use-8bit-adam needs the bitsandbytes package (pip install bitsandbytes) and a CUDA GPU")
    class_word = _class_word(args.class_word or (SCENE_CLASS if stage == 1 else SUBJECT_CLASS))
    null_prob = 0.0 if args.null_prob is None else args.null_prob
    if args.preview_every:
        log("--preview-every: the sd backbone writes no preview grids while training, only the bundle's "
            "preview.png (--preview-steps); ignored")

    from . import offline
    offline()

    from ..core.device import start
    from ..core.images import open_library_image
    from ..core.run import Runtime, budget_seconds, execute
    from .run import SdJob, resolve_mixed_precision, resolved_precision
    job_class: type[SdJob] = SdJob
    if xl:
        from ..sdxl.run import XlJob
        job_class = XlJob

    stop, device, threads = start(args.device, args.threads, deterministic=False)
    if args.use_8bit_adam and device.type != "cuda":
        raise BadInput("--use-8bit-adam needs a CUDA device")
    mixed = resolve_mixed_precision(args.mixed_precision or "auto", device)
    settings = SdSettings(
        stage=stage, steps=args.steps or preset["steps"], batch=args.batch or preset["batch"],
        lr=args.lr or (LR_LORA if lora_rank > 0 else LR_FULL), resolution=resolution, class_word=class_word,
        seed=args.seed, lora_rank=lora_rank, lora_alpha=lora_alpha, train_text_encoder=train_te,
        mixed_precision=mixed, gradient_checkpointing=bool(args.gradient_checkpointing),
        use_8bit_adam=bool(args.use_8bit_adam), grad_accum=args.gradient_accumulation_steps or 1,
        prior_loss_weight=1.0 if getattr(args, "prior_loss_weight", None) is None else args.prior_loss_weight,
        caption_dropout=null_prob,
        checkpoint_every=args.checkpoint_every if args.checkpoint_every is not None else (200 if lora_rank else 0),
        export_precision=args.export_precision or "auto", optimize="off" if xl else (args.optimize or "auto"),
        preset=preset_name, preview_steps=15 if args.preview_steps is None else args.preview_steps,
        backbone=backbone)
    saved = resume.open_checkpoint(library, name, stage, backbone) if args.resume else None
    if saved is not None:
        settings = SdSettings.from_dict(saved["settings"])   # and so the class word the run began with
    # Refused here, not after training: the export would refuse it.
    resolve_optimize(settings.optimize, resolved_precision(settings.export_precision, device), device.type == "cuda")
    kept = resume.kept_identifier(library, name) if saved is not None else None
    taken = taken_identifiers(library)
    if stage == 1:
        ident = kept or new_identifier(args.seed, taken)
        text = prompt(ident, settings.class_word)
        concepts = [concept(ident, name, "scene", 1, image, 1, class_word=settings.class_word, prompt=text)]
        job = job_class(stage=1, name=name, library=library, base=base, settings=settings, concepts=concepts,
                    parent=None, meta={"backbone": backbone, "stage": 1, "scene_sha256": image.sha256,
                                       "base": base.fingerprint},
                    scene=image.image.convert("RGB"), scene_prompt=text,
                    notes={"source_downscaled": image.downscaled, "working_size": list(image.image.size)})
    else:
        assert parent is not None
        pm = parent.manifest
        scene_c = parent.scene_concept
        taken |= {c["identifier"] for c in pm["tokens"]["concepts"]}
        ident = kept or new_identifier(args.seed + 1, taken)
        text = prompt(ident, settings.class_word)
        scene = open_library_image(parent.path / SCENE, library).convert("RGB")
        concepts = [dict(scene_c), concept(ident, name, "subject", 2, image, 2, class_word=settings.class_word,
                                           prompt=text)]
        job = job_class(stage=2, name=name, library=library, base=base, settings=settings, concepts=concepts,
                    parent=parent.parent_record(),
                    meta={"backbone": backbone, "stage": 2, "parent_sha256": parent.manifest_sha256,
                          "subject_sha256": image.sha256, "mask_sha256": inputs.mask_sha256,
                          "base": base.fingerprint},
                    scene=scene, scene_prompt=scene_c["prompt"], subject=image, mask=inputs.mask,
                    subject_prompt=text, init_weights=parent.path / WEIGHTS,
                    notes={"source_downscaled": image.downscaled})
    rt = Runtime(device=device, threads=threads, force=args.force, budget_s=budget_seconds(args))
    execute(job, rt, progress, stop, saved)
    return EXIT_DONE


def run_sample(args: argparse.Namespace) -> None:
    from .sample import run_sample as sample
    sample(args)
