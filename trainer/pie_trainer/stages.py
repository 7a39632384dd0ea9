"""Stage I (scene) and Stage II (subject): set-up, training, export, the bundle.

Both stages share `execute`: pick device/threads/precision, train (or resume),
export the EMA model to ONNX, verify it, write the bundle atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from . import TRAINER_NAME, __version__
from . import bundle as bd
from . import checkpoint as ck
from .data import Batch, SceneCrops, SubjectViews, cutout_rgba, resize_exclude, resize_short_side
from .diffusion import Schedule
from .errors import BadInput
from .export import export_onnx, graph_manifest, verify_onnx
from .images import ExcludeMask, LoadedImage, open_library_image
from .library import checkpoint_dir
from .model import MIN_SIZE, NULL_TOKEN, SCENE_TOKEN, SIZE_MULTIPLE, SUBJECT_TOKEN, VOCAB_SIZE, UNetConfig
from .progress import Progress, log
from .settings import Settings
from .speed import MODES, RateWatcher, bf16_usable, time_modes
from .train import LoopContext, StopFlag, cancel, new_state, preview_grid, restore_state, train_loop


@dataclass
class Runtime:
    """How to run: chosen from the command line, not recorded in the checkpoint."""
    device: torch.device
    threads: int
    precision: str          # auto, fp32, bf16
    bench_steps: int
    force: bool
    resume: bool


@dataclass
class Job:
    stage: int
    name: str
    library: Path
    settings: Settings
    config: UNetConfig
    schedule: Schedule
    init_weights: dict[str, torch.Tensor] | None
    make_batch: Callable[[int, torch.Generator], Batch]
    preview_tokens: list[int]
    concepts: list[dict[str, Any]]
    parent: dict[str, str] | None
    meta: dict[str, Any]                               # identity of the run, checked on --resume
    extra_files: Callable[[Path], list[str]] = lambda folder: []
    extra_manifest: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def choose_mode(job: Job, rt: Runtime, progress: Progress) -> tuple[str, dict[str, float]]:
    if rt.precision != "auto":
        if rt.precision == "bf16" and not bf16_usable(rt.device):
            raise BadInput("--precision bf16 was asked for but this device has no bf16 support")
        return rt.precision, {}
    modes = tuple(m for m in MODES if m == "fp32" or bf16_usable(rt.device))
    if rt.bench_steps <= 0 or len(modes) == 1:
        return "fp32", {}
    progress.phase(job.stage, "benchmark", f"timing {rt.bench_steps} steps in each mode ({', '.join(modes)})")
    r, n = job.settings.resolution, job.settings.batch
    gen = torch.Generator().manual_seed(1234)

    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.randn(n, 3, r, r, generator=gen), torch.randint(0, 1000, (n,), generator=gen),
                torch.randint(0, VOCAB_SIZE, (n,), generator=gen))

    from .model import TinyUNet
    probe = TinyUNet(job.config)
    rates = time_modes(probe, inputs, rt.device, modes, rt.bench_steps)
    best = max(rates, key=lambda m: rates[m])
    log("steps/s by mode: " + ", ".join(f"{m} {v:.2f}" for m, v in rates.items()) + f"; using {best}")
    return best, {m: round(v, 3) for m, v in rates.items()}


def execute(job: Job, rt: Runtime, progress: Progress, stop: StopFlag) -> Path:
    t_start = time.monotonic()
    s = job.settings
    ckdir = checkpoint_dir(job.library, job.name)
    saved: dict[str, Any] | None = None
    if rt.resume:
        if not (ckdir / ck.STATE).is_file():
            raise BadInput(f"there is no checkpoint to resume for {job.name!r} (looked in {ckdir})")
        saved = ck.load_state(ckdir, job.library)
        if saved.get("extra", {}).get("meta") != job.meta:
            raise BadInput(f"the checkpoint in {ckdir} belongs to a different run (other stage, image, "
                           "scene or mask); start again without --resume")
        job.settings = s = Settings.from_dict(saved["settings"])
        log(f"resuming {job.name!r} at step {saved['step']} of {s.steps} (the checkpoint's settings are used)")
    elif ckdir.exists():
        for f in (ck.STATE, ck.META):
            (ckdir / f).unlink(missing_ok=True)
    ckdir.mkdir(parents=True, exist_ok=True)
    ck.save_json({**job.meta, "identifier": job.concepts[-1]["identifier"]}, ckdir / ck.META)

    torch.set_num_threads(rt.threads)
    mode, bench = choose_mode(job, rt, progress)
    st = new_state(s, job.config, rt.device, mode, job.init_weights)
    st.extra = {"meta": job.meta}
    if saved is not None:
        restore_state(st, saved)
    progress.emit("start", stage=job.stage, name=job.name, total=s.steps, device=str(rt.device),
                  precision=mode, threads=rt.threads)

    def weights_info() -> dict[str, Any]:
        return {"stage": job.stage, "name": job.name, "resolution": s.resolution,
                "scene_short_side": s.scene_short_side, "schedule": job.schedule.manifest(),
                "tokens": {"null": NULL_TOKEN, "concepts": job.concepts}, "step": st.step}

    watcher = RateWatcher(rt.threads, rt.device)
    ctx = LoopContext(stage=job.stage, settings=s, device=rt.device, mode=mode, schedule=job.schedule,
                      progress=progress, stop=stop, ckpt_dir=ckdir, make_batch=job.make_batch,
                      preview_tokens=job.preview_tokens, watcher=watcher, weights_info=weights_info)
    progress.phase(job.stage, "train", f"training {job.name!r}: step {st.step} of {s.steps}")
    train_loop(ctx, st)
    t_trained = time.monotonic()

    bd.remove_stale_partials(job.library, job.name)
    with bd.Staging(job.library, job.name) as staging:
        progress.phase(job.stage, "export", "exporting the EMA denoiser to ONNX")
        export_onnx(st.ema, staging.file(bd.DENOISER), s.resolution)
        ck.save_torch(ck.weights_payload(st.ema, job.config, weights_info()), staging.file(bd.WEIGHTS))
        grid = preview_grid(st.ema, job.preview_tokens, s.resolution, job.schedule, s.seed, rt.device,
                            should_stop=stop)
        if stop():
            raise cancel(ctx, st)
        grid.save(staging.file(bd.PREVIEW))
        files = [bd.DENOISER, bd.WEIGHTS, bd.PREVIEW] + job.extra_files(staging.path)
        progress.phase(job.stage, "verify", "checking the ONNX graph against PyTorch with ONNX Runtime")
        diff = verify_onnx(st.ema, staging.file(bd.DENOISER), s.resolution, job.config.vocab_size, rt.threads)
        if stop():
            raise cancel(ctx, st)
        progress.phase(job.stage, "write", f"writing the bundle {job.name!r}")
        training = {**s.to_dict(), "device": str(rt.device), "precision": mode, "threads": rt.threads,
                    "final_threads": watcher.threads, "benchmark_steps_per_s": bench,
                    "final_loss": round(st.loss_avg, 6), "train_wall_s": round(t_trained - t_start, 1),
                    "resumed": saved is not None, "onnx_max_abs_diff": diff, "torch": torch.__version__,
                    **job.notes}
        manifest = {
            "format": "pie-bundle", "format_version": 1, "name": job.name, "stage": job.stage,
            "backbone": bd.BACKBONE, "parent": job.parent,
            "model": {"resolution": s.resolution, "size_multiple": SIZE_MULTIPLE, "min_size": MIN_SIZE,
                      "channels": 3, "value_range": [-1, 1], "base_channels": job.config.base_channels,
                      "scene_short_side": s.scene_short_side},
            "schedule": job.schedule.manifest(),
            "tokens": {"null": NULL_TOKEN, "vocab_size": job.config.vocab_size, "concepts": job.concepts},
            "graphs": {"denoiser": graph_manifest(bd.DENOISER)},
            **job.extra_manifest,
            "training": training,
            "trainer": {"name": TRAINER_NAME, "version": __version__, "torch": torch.__version__},
            "created": bd.utc_now(),
            "preview": bd.PREVIEW,
        }
        if stop():
            raise cancel(ctx, st)
        folder = staging.commit(manifest, files, rt.force)
    # The run is complete: the resumable state goes, the EMA weights and previews stay.
    ck.save_torch(ck.weights_payload(st.ema, job.config, weights_info()), ckdir / ck.WEIGHTS)
    for f in (ck.STATE, ck.META):
        (ckdir / f).unlink(missing_ok=True)
    progress.emit("done", stage=job.stage, name=job.name, bundle=str(folder),
                  wall_s=round(time.monotonic() - t_start, 2))
    return folder


def concept(ident: str, name: str, role: str, stage: int, img: LoadedImage, token: int) -> dict[str, Any]:
    return {"id": token, "identifier": ident, "name": name, "role": role, "stage": stage,
            "source_sha256": img.sha256, "source_size": [img.source_size[0], img.source_size[1]]}


def scene_job(name: str, library: Path, scene: LoadedImage, settings: Settings, ident: str,
              exclude: ExcludeMask | None = None) -> Job:
    crops = SceneCrops(scene.image, settings.resolution, settings.scene_short_side,
                       None if exclude is None else exclude.excluded)

    def make_batch(n: int, gen: torch.Generator) -> Batch:
        token = torch.full((n,), SCENE_TOKEN, dtype=torch.int64)
        if exclude is None:
            return Batch(x0=crops.sample(n, gen), token=token, weight=torch.ones(n, 1, 1, 1))
        x, w = crops.sample_weighted(n, gen)
        return Batch(x0=x, token=token, weight=w)

    def extra_files(folder: Path) -> list[str]:
        # The scene as learned: with an exclude mask, its excluded pixels are filled in here
        # too, and the mask goes beside it, so that Stage II's replay never sees them either.
        scene_img = resize_short_side(crops.scene, settings.scene_short_side)
        scene_img.save(folder / bd.SCENE)
        if exclude is None:
            return [bd.SCENE]
        m = resize_exclude(exclude.excluded, scene_img.size)
        Image.fromarray(m.astype(np.uint8) * 255).save(folder / bd.EXCLUDE)
        return [bd.SCENE, bd.EXCLUDE]

    meta: dict[str, Any] = {"stage": 1, "scene_sha256": scene.sha256}
    notes: dict[str, Any] = {"source_downscaled": scene.downscaled, "working_size": list(scene.image.size)}
    if exclude is not None:
        meta["exclude_sha256"] = exclude.sha256
        notes["exclude_mask"] = {"sha256": exclude.sha256, "excluded_fraction": round(exclude.fraction, 6),
                                 "file": bd.EXCLUDE}
    return Job(stage=1, name=name, library=library, settings=settings,
               config=UNetConfig(base_channels=settings.base_channels), schedule=Schedule(), init_weights=None,
               make_batch=make_batch, preview_tokens=[SCENE_TOKEN],
               concepts=[concept(ident, name, "scene", 1, scene, SCENE_TOKEN)], parent=None,
               meta=meta, extra_files=extra_files, notes=notes)


def subject_job(name: str, library: Path, parent: bd.SceneBundle, subject: LoadedImage, mask: np.ndarray | None,
                mask_sha: str | None, settings: Settings, ident: str) -> Job:
    model, info = ck.load_weights(parent.weights, library)
    views = SubjectViews(subject.image, mask, settings.resolution)
    scene = open_library_image(parent.scene_image, library).convert("RGB")
    exclude = None
    if parent.exclude_image is not None:
        grey = open_library_image(parent.exclude_image, library)
        exclude = np.asarray(grey.convert("L").resize(scene.size, Image.Resampling.BOX)) > 0
    crops = SceneCrops(scene, settings.resolution, settings.scene_short_side, exclude)
    n_scene_frac = settings.replay

    def make_batch(n: int, gen: torch.Generator) -> Batch:
        k = min(n - 1, max(1, round(n * n_scene_frac)))
        xs, ws = views.sample(n - k, gen)
        if exclude is None:
            xc = crops.sample(k, gen)
            wc = torch.ones(k, 1, settings.resolution, settings.resolution)
        else:
            xc, wc = crops.sample_weighted(k, gen)
        token = torch.tensor([SUBJECT_TOKEN] * (n - k) + [SCENE_TOKEN] * k, dtype=torch.int64)
        return Batch(x0=torch.cat([xs, xc]), token=token, weight=torch.cat([ws, wc]))

    def extra_files(folder: Path) -> list[str]:
        cutout_rgba(subject.image, mask).save(folder / bd.SUBJECT)
        return [bd.SUBJECT]

    scene_concept = next(c for c in parent.manifest["tokens"]["concepts"] if c["role"] == "scene")
    return Job(stage=2, name=name, library=library, settings=settings, config=model.config, schedule=Schedule(),
               init_weights=model.state_dict(), make_batch=make_batch,
               preview_tokens=[scene_concept["id"], SUBJECT_TOKEN],
               concepts=[dict(scene_concept), concept(ident, name, "subject", 2, subject, SUBJECT_TOKEN)],
               parent={"name": parent.manifest["name"], "manifest_sha256": parent.manifest_sha256},
               meta={"stage": 2, "parent_sha256": parent.manifest_sha256, "subject_sha256": subject.sha256,
                     "mask_sha256": mask_sha},
               extra_files=extra_files,
               extra_manifest={"subject": {"file": bd.SUBJECT, "has_mask": mask is not None}},
               notes={"source_downscaled": subject.downscaled, "subject_box": list(views.box),
                      "parent_info_step": info.get("step"), "replay_excludes": exclude is not None})
