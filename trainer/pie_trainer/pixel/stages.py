"""Stage I (scene) and Stage II (subject) on the pixel-unet: what each learns, and
its bundle (export to ONNX, the check against PyTorch, the manifest).

A `PixelJob` is the `core.run.Job` the run skeleton (`core.run.execute`) drives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core import bundle as bd
from ..core.checkpoint import save_torch
from ..core.errors import BadInput
from ..core.images import ExcludeMask, LoadedImage, open_library_image
from ..core.progress import Progress, log
from ..core.run import Run, Runtime
from ..core.views import SceneCrops, SubjectViews, cutout_rgba, resize_exclude, resize_short_side
from . import NAME as BACKBONE
from .diffusion import Schedule
from .export import export_onnx, graph_manifest, verify_onnx
from .model import MIN_SIZE, NULL_TOKEN, SCENE_TOKEN, SIZE_MULTIPLE, SUBJECT_TOKEN, VOCAB_SIZE, TinyUNet, UNetConfig
from .quantize import CALIBRATION_BATCHES, CHECK_BATCHES, TOLERANCE, add_like_feeds, quantize
from .settings import Settings
from .speed import MODES, bf16_usable, time_modes
from .train import Batch, PixelTraining, preview_grid
from .weights import WEIGHTS, load_weights

DENOISER = "denoiser.onnx"
DENOISER_INT8 = "denoiser.int8.onnx"
EXCLUDE = "exclude.png"    # Stage I with --exclude: white = never learned, at scene.png's size
TRAIN_HINT = "python -m pie_trainer scene IMAGE --name NAME"


@dataclass
class PixelJob:
    stage: int
    name: str
    library: Path
    settings: Settings
    config: UNetConfig
    schedule: Schedule
    init_weights: dict[str, torch.Tensor] | None
    make_batch: Callable[[int, torch.Generator, int], Batch]
    preview_tokens: list[int]
    concepts: list[dict[str, Any]]
    parent: dict[str, str] | None
    meta: dict[str, Any]                               # identity of the run, checked on --resume
    requested_precision: str = "auto"                  # --precision: auto, fp32, bf16
    bench_steps: int = 6
    extra_files: Callable[[Path], list[str]] = lambda folder: []
    extra_manifest: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    benchmark: dict[str, float] = field(default_factory=dict)

    def precision(self, rt: Runtime, progress: Progress) -> str:
        mode, self.benchmark = choose_mode(self, rt, progress)
        return mode

    def describe(self, step: int) -> str:
        return f"training {self.name!r}: step {step} of {self.settings.steps}"

    def weights_info(self, step: int) -> dict[str, Any]:
        s = self.settings
        return {"stage": self.stage, "name": self.name, "resolution": s.resolution,
                "scene_short_side": s.scene_short_side, "schedule": self.schedule.manifest(),
                "tokens": {"null": NULL_TOKEN, "concepts": self.concepts}, "step": step}

    def begin(self, run: Run) -> PixelTraining:
        tr = PixelTraining(self.stage, self.settings, self.config, self.schedule, run.rt.device, run.precision,
                           self.init_weights, self.make_batch, self.preview_tokens, self.weights_info,
                           run.checkpoints, run.progress, run.stop)
        tr.extra = {"meta": self.meta}
        if run.saved is not None:
            tr.restore(run.saved)
        return tr

    def write_bundle(self, training: Any, staging: bd.Staging, run: Run) -> Path:
        tr: PixelTraining = training
        s, rt, progress, stop = self.settings, run.rt, run.progress, run.stop
        tr.model.eval()
        progress.phase(self.stage, "export", "exporting the EMA denoiser to ONNX")
        export_onnx(tr.ema, staging.file(DENOISER), s.resolution)
        save_torch(tr.weights(), staging.file(WEIGHTS))
        grid = preview_grid(tr.ema, self.preview_tokens, s.resolution, self.schedule, s.seed, rt.device,
                            should_stop=stop)
        if stop():
            raise run.cancel(self.stage, tr)
        grid.save(staging.file(bd.PREVIEW))
        files = [DENOISER, WEIGHTS, bd.PREVIEW] + self.extra_files(staging.path)
        probe = tr.probe()
        log(f"probe (EMA ε MSE on fixed crops, noise and timesteps): {probe['mean']:.5f}")
        progress.phase(self.stage, "verify", "checking the ONNX graph against PyTorch with ONNX Runtime")
        diff = verify_onnx(tr.ema, staging.file(DENOISER), s.resolution, self.config.vocab_size, rt.threads)
        if stop():
            raise run.cancel(self.stage, tr)
        graphs = {"denoiser": graph_manifest(DENOISER)}
        int8 = self.quantized(staging, rt.threads)
        if int8.get("rel_rms_diff", math.inf) <= TOLERANCE:
            graphs["denoiser_int8"] = {**graph_manifest(DENOISER_INT8), "quantization": int8}
            files.append(DENOISER_INT8)
        else:
            staging.file(DENOISER_INT8).unlink(missing_ok=True)
        if stop():
            raise run.cancel(self.stage, tr)
        progress.phase(self.stage, "write", f"writing the bundle {self.name!r}")
        training_record = {
            **s.to_dict(), "device": str(rt.device), "precision": run.precision, "threads": rt.threads,
            "final_threads": run.final_threads, "benchmark_steps_per_s": self.benchmark,
            "final_loss": round(tr.loss_avg, 6), "train_wall_s": round(run.trained - run.started, 1),
            "resumed": run.saved is not None, "onnx_max_abs_diff": diff, "torch": torch.__version__,
            "int8": int8, **run.record(s.steps), "probe": probe, **self.notes}
        model = {"resolution": s.resolution, "size_multiple": SIZE_MULTIPLE, "min_size": MIN_SIZE, "channels": 3,
                 "value_range": [-1, 1], "base_channels": self.config.base_channels,
                 "scene_short_side": s.scene_short_side}
        tokens = {"null": NULL_TOKEN, "vocab_size": self.config.vocab_size, "concepts": self.concepts}
        manifest = bd.manifest(self.name, self.stage, BACKBONE, self.parent, model, self.schedule.manifest(),
                               tokens, {"graphs": graphs, **self.extra_manifest},
                               training_record)
        manifest["preview"] = bd.PREVIEW
        if stop():
            raise run.cancel(self.stage, tr)
        return staging.commit(manifest, files, rt.force)

    def quantized(self, staging: bd.Staging, threads: int) -> dict[str, Any]:
        """The int8 twin of the denoiser (see quantize.py), calibrated on this run's own
        training views; what bundle.json says of it, or why there is none."""
        def views(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            b = self.make_batch(n, gen, self.settings.resolution)  # the resolution the model ends at
            return b.x0, b.token

        try:
            return quantize(staging.file(DENOISER), staging.file(DENOISER_INT8),
                            add_like_feeds(views, self.schedule, CALIBRATION_BATCHES, self.settings.seed),
                            add_like_feeds(views, self.schedule, CHECK_BATCHES, self.settings.seed + 1), threads)
        except Exception as e:  # noqa: BLE001 - the fp32 graph is complete without it
            log(f"no int8 denoiser: quantizing failed: {e}")
            return {"skipped": f"quantizing failed: {type(e).__name__}: {e}"}

    def finished(self, training: Any, run: Run) -> None:
        # The EMA weights and the previews stay in the checkpoint folder.
        save_torch(training.weights(), run.checkpoints / WEIGHTS)


def choose_mode(job: PixelJob, rt: Runtime, progress: Progress) -> tuple[str, dict[str, float]]:
    if job.requested_precision != "auto":
        if job.requested_precision == "bf16" and not bf16_usable(rt.device):
            raise BadInput("--precision bf16 was asked for but this device has no bf16 support")
        return job.requested_precision, {}
    modes = tuple(m for m in MODES if m == "fp32" or bf16_usable(rt.device))
    if job.bench_steps <= 0 or len(modes) == 1:
        return "fp32", {}
    progress.phase(job.stage, "benchmark", f"timing {job.bench_steps} steps in each mode ({', '.join(modes)})")
    r, n = job.settings.resolution, job.settings.batch
    gen = torch.Generator().manual_seed(1234)

    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.randn(n, 3, r, r, generator=gen), torch.randint(0, 1000, (n,), generator=gen),
                torch.randint(0, VOCAB_SIZE, (n,), generator=gen))

    probe = TinyUNet(job.config)
    rates = time_modes(probe, inputs, rt.device, modes, job.bench_steps)
    best = max(rates, key=lambda m: rates[m])
    log("steps/s by mode: " + ", ".join(f"{m} {v:.2f}" for m, v in rates.items()) + f"; using {best}")
    return best, {m: round(v, 3) for m, v in rates.items()}


def load_parent(library: Path, scene: str) -> tuple[bd.SceneBundle, Path | None]:
    """The pixel-unet scene a subject grows from, and its exclude mask's file when it has one."""
    parent = bd.load_scene_bundle(library, scene, BACKBONE, (WEIGHTS, bd.SCENE), TRAIN_HINT, optional=(EXCLUDE,))
    return parent, parent.path / EXCLUDE if EXCLUDE in parent.files else None


def scene_job(name: str, library: Path, scene: LoadedImage, settings: Settings, ident: str,
              exclude: ExcludeMask | None = None) -> PixelJob:
    crops = SceneCrops(scene.image, settings.resolution, settings.scene_short_side,
                       None if exclude is None else exclude.excluded)

    def make_batch(n: int, gen: torch.Generator, r: int) -> Batch:
        token = torch.full((n,), SCENE_TOKEN, dtype=torch.int64)
        if exclude is None:
            return Batch(x0=crops.sample(n, gen, r), token=token, weight=torch.ones(n, 1, 1, 1))
        x, w = crops.sample_weighted(n, gen, r)
        return Batch(x0=x, token=token, weight=w)

    def extra_files(folder: Path) -> list[str]:
        # The scene as learned: with an exclude mask, its excluded pixels are filled in here
        # too, and the mask goes beside it, so that Stage II's replay never sees them either.
        scene_img = resize_short_side(crops.scene, settings.scene_short_side)
        scene_img.save(folder / bd.SCENE)
        if exclude is None:
            return [bd.SCENE]
        m = resize_exclude(exclude.excluded, scene_img.size)
        Image.fromarray(m.astype(np.uint8) * 255).save(folder / EXCLUDE)
        return [bd.SCENE, EXCLUDE]

    meta: dict[str, Any] = {"stage": 1, "scene_sha256": scene.sha256}
    notes: dict[str, Any] = {"source_downscaled": scene.downscaled, "working_size": list(scene.image.size)}
    if exclude is not None:
        meta["exclude_sha256"] = exclude.sha256
        notes["exclude_mask"] = {"sha256": exclude.sha256, "excluded_fraction": round(exclude.fraction, 6),
                                 "file": EXCLUDE}
    return PixelJob(stage=1, name=name, library=library, settings=settings,
                    config=UNetConfig(base_channels=settings.base_channels), schedule=Schedule(), init_weights=None,
                    make_batch=make_batch, preview_tokens=[SCENE_TOKEN],
                    concepts=[bd.concept(ident, name, "scene", 1, scene, SCENE_TOKEN)], parent=None,
                    meta=meta, extra_files=extra_files, notes=notes)


def subject_job(name: str, library: Path, parent: bd.SceneBundle, exclude_file: Path | None,
                subject: LoadedImage, mask: np.ndarray | None, mask_sha: str | None, settings: Settings,
                ident: str) -> PixelJob:
    model, info = load_weights(parent.path / WEIGHTS, library)
    views = SubjectViews(subject.image, mask, settings.resolution)
    scene = open_library_image(parent.path / bd.SCENE, library).convert("RGB")
    exclude = None
    if exclude_file is not None:
        grey = open_library_image(exclude_file, library)
        exclude = np.asarray(grey.convert("L").resize(scene.size, Image.Resampling.BOX)) > 0
    crops = SceneCrops(scene, settings.resolution, settings.scene_short_side, exclude)
    n_scene_frac = settings.replay

    def make_batch(n: int, gen: torch.Generator, r: int) -> Batch:
        if r != settings.resolution:
            raise BadInput("a subject is learned at one resolution (no coarse phase)")
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

    scene_concept = parent.scene_concept
    return PixelJob(stage=2, name=name, library=library, settings=settings, config=model.config,
                    schedule=Schedule(), init_weights=model.state_dict(), make_batch=make_batch,
                    preview_tokens=[scene_concept["id"], SUBJECT_TOKEN],
                    concepts=[dict(scene_concept), bd.concept(ident, name, "subject", 2, subject, SUBJECT_TOKEN)],
                    parent=parent.parent_record(),
                    meta={"stage": 2, "parent_sha256": parent.manifest_sha256, "subject_sha256": subject.sha256,
                          "mask_sha256": mask_sha},
                    extra_files=extra_files,
                    extra_manifest={"subject": {"file": bd.SUBJECT, "has_mask": mask is not None}},
                    notes={"source_downscaled": subject.downscaled, "subject_box": list(views.box),
                           "parent_info_step": info.get("step"), "replay_excludes": exclude is not None})
