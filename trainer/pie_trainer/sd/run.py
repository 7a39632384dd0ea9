"""Stage I and Stage II on the sd backbone: DreamBooth (LoRA or full) on a local
Stable Diffusion checkpoint, then export, verification and the bundle. An `SdJob`
is the `core.run.Job` the run skeleton (`core.run.execute`) drives.

Stage I: random crops/flips of the scene, prompt "a photo of <id> scene".
Stage II: the subject's whole bounding box (mask-weighted loss, mild
augmentation), prompt "a photo of <id2> <class_word>", with prior preservation:
the scene replayed with its Stage I prompt in every step, weighted by
--prior-loss-weight. Stage II continues from Stage I's weights.safetensors.
An inpainting base (UNet in_channels 9) is trained with its inpainting input:
random masks, the masked image's latents, the mask at latent resolution.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core import bundle as bd
from ..core import checkpoint as ck
from ..core.errors import BadInput, Cancelled
from ..core.images import LoadedImage
from ..core.progress import Progress, log
from ..core.run import Run, Runtime
from ..core.stop import StopFlag
from ..core.views import SceneCrops, SubjectViews, cutout_rgba, randint, resize_short_side
from . import NAME, TOKENIZER, WEIGHTS
from . import export as ex
from . import models as md
from . import optimize as opt
from .base import Base, schedule_manifest
from .settings import SdSettings

NULL_TOKEN, SCENE_TOKEN, SUBJECT_TOKEN = 0, 1, 2


@dataclass
class SdJob:
    stage: int
    name: str
    library: Path
    base: Base
    settings: SdSettings
    concepts: list[dict[str, Any]]
    parent: dict[str, str] | None
    meta: dict[str, Any]
    scene: Image.Image                       # the scene (Stage I: the image; Stage II: the parent's scene.png)
    scene_prompt: str
    subject: LoadedImage | None = None
    mask: np.ndarray | None = None
    subject_prompt: str | None = None
    init_weights: Path | None = None          # Stage II: the scene bundle's weights.safetensors
    notes: dict[str, Any] = field(default_factory=dict)
    # What another backbone built on this one (sdxl/run.py) changes: its name, its trainer, and the
    # arch-specific parts of the export below (the text encoder and UNet graphs, the manifest's additions).
    backbone: ClassVar[str] = NAME

    def precision(self, rt: Runtime, progress: Progress) -> str:
        return self.settings.mixed_precision

    def describe(self, step: int) -> str:
        return f"training {self.name!r} on {self.base.name}: step {step} of {self.settings.steps}"

    def begin(self, run: Run) -> Trainer:
        tr = self.trainer(run)
        if run.saved is not None:
            tr.restore(run.saved)
        return tr

    def trainer(self, run: Run) -> Trainer:
        return Trainer(self, run.rt, run.checkpoints)

    def export_one(self, name: str, parts: md.Parts, folder: Path, L: int, device: torch.device,
                   dtype: torch.dtype) -> list[str]:
        """One graph of ex.GRAPHS into `folder`; the bundle files it made."""
        return ex.export_graph(name, parts, folder, L, self.base.size_multiple, self.base.vae_scale_factor,
                               device, dtype)

    def verify(self, parts: md.Parts, folder: Path, files: dict[str, str], L: int, threads: int,
               precision: str) -> dict[str, Any]:
        return ex.verify(parts, folder, files, L, self.base.size_multiple, self.base.vae_scale_factor, threads,
                         precision)

    def hidden_size(self, parts: md.Parts) -> int:
        """D: the width of the text encoder graph's last_hidden_state."""
        return int(parts.text_encoder.config.hidden_size)

    def graphs_manifest(self, files: dict[str, str], L: int, D: int, parts: md.Parts) -> dict[str, Any]:
        return ex.graphs_manifest(files, L, D, self.base.in_channels)

    def vae_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The VAE's weights when the rest is in `dtype` (training's frozen copy, and the export)."""
        return dtype

    def model_extra(self, parts: md.Parts) -> dict[str, Any]:
        """What the backbone adds to bundle.json's `model` (sd: nothing)."""
        return {}

    def write_bundle(self, training: Any, staging: bd.Staging, run: Run) -> Path:
        tr: Trainer = training
        s, rt = self.settings, run.rt
        info = {"stage": self.stage, "name": self.name, "base": str(self.base.path),
                "base_fingerprint": self.base.fingerprint, "step": tr.step}
        md.save_weights(tr.parts, tr.tuning, staging.file(WEIGHTS), info)
        tokenizer = tr.parts.tokenizer
        L = tr.L
        final_loss = tr.loss_avg
        tr.release()
        if run.stop():
            raise _cancel_from_weights(self, staging.file(WEIGHTS), run.checkpoints)
        try:
            run.progress.phase(self.stage, "export", "exporting text encoder, UNet and VAE to ONNX")
            parts, _ = md.finetuned(self.base, staging.file(WEIGHTS))
            precision = export_precision(s.export_precision, rt.device)
            optimize = opt.resolve(s.optimize, precision, rt.device.type == "cuda")
            # The fusions read float32 weights: an optimized graph is exported in float32 and
            # becomes float16 after them (sd/optimize.py).
            dtype = torch.float16 if precision == "float16" and not optimize else torch.float32
            exp_device = rt.device if precision == "float16" else torch.device("cpu")
            if dtype != torch.float32 or exp_device.type != "cpu":
                import copy
                exp_parts = copy.copy(parts)
                exp_parts.unet = copy.deepcopy(parts.unet).to(exp_device, dtype)
                exp_parts.vae = copy.deepcopy(parts.vae).to(exp_device, self.vae_dtype(dtype))
                exp_parts.text_encoder = copy.deepcopy(parts.text_encoder).to(exp_device, dtype)
                if parts.text_encoder_2 is not None:
                    exp_parts.text_encoder_2 = copy.deepcopy(parts.text_encoder_2).to(exp_device, dtype)
            else:
                exp_parts = parts
            if optimize:
                opt.export_for_fusion(exp_parts)
            files: dict[str, str] = {}
            written: list[str] = [WEIGHTS]
            fused: dict[str, dict[str, int]] = {}
            te = exp_parts.text_encoder.config
            for g in ex.GRAPHS:
                made = self.export_one(g, exp_parts, staging.path, L, exp_device, dtype)
                if optimize:
                    log(f"fusing {g} for CUDA (ONNX Runtime's transformer optimizer, then float16)")
                    heads = (int(te.num_attention_heads), int(te.hidden_size)) if g == "text_encoder" else (0, 0)
                    made, fused[g] = opt.optimize_graph(staging.path, g, made, ex.EXTERNAL_LIMIT, *heads)
                files[g] = made[0]
                written += made
                if run.stop():
                    raise _cancel_from_weights(self, staging.file(WEIGHTS), run.checkpoints)
            del exp_parts
            save_tokenizer(tokenizer, staging.file(TOKENIZER))
            written.append(TOKENIZER)
            if self.stage == 1:
                # At the largest scale Stage II's replay crops use, so they are never upsampled.
                resize_short_side(self.scene.convert("RGB"), max(s.resolution, round(s.resolution * s.scene_zoom))) \
                    .save(staging.file(bd.SCENE))
                written.append(bd.SCENE)
            else:
                assert self.subject is not None
                cutout_rgba(self.subject.image, self.mask).save(staging.file(bd.SUBJECT))
                written.append(bd.SUBJECT)
            run.progress.phase(self.stage, "verify", "checking every graph against PyTorch with ONNX Runtime")
            diffs = self.verify(parts, staging.path, files, L, rt.threads, precision)
            D = self.hidden_size(parts)
            scaling = float(parts.vae.config.scaling_factor)
            extra = self.model_extra(parts)
            graphs = self.graphs_manifest(files, L, D, parts)
            if run.stop():
                raise _cancel_from_weights(self, staging.file(WEIGHTS), run.checkpoints)
            del parts
            base = self.base
            scene_c = self.concepts[0]
            add = self.scene_prompt if self.stage == 1 else \
                f"{self.subject_prompt} in {scene_c['identifier']} {scene_c['class_word']}"
            training = {**s.to_dict(), "device": str(rt.device), "threads": rt.threads,
                        "final_loss": round(final_loss, 6), "train_wall_s": round(run.trained - run.started, 1),
                        "resumed": run.saved is not None, "onnx_max_abs_diff": diffs, "torch": torch.__version__,
                        "export_precision": precision, **({"fused_operators": fused} if optimize else {}),
                        **run.record(s.steps), **self.notes}
            model = {"resolution": s.resolution, "size_multiple": base.size_multiple,
                     "min_size": base.size_multiple, "channels": 3, "value_range": [-1, 1],
                     "latent_channels": int(base.vae.get("latent_channels", 4)),
                     "vae_scale_factor": base.vae_scale_factor, "scaling_factor": scaling,
                     "unet_in_channels": base.in_channels, "precision": precision,
                     "base": {"name": base.name, "path": str(base.path), "fingerprint": base.fingerprint},
                     **extra}
            if optimize:
                model["optimized"] = {"by": opt.TOOL, "version": opt.version(), "graphs": list(fused)}
            body = {"text": {"tokenizer": TOKENIZER, "max_length": L, "bos_id": int(tokenizer.bos_token_id),
                             "eos_id": int(tokenizer.eos_token_id), "pad_id": int(tokenizer.pad_token_id),
                             "hidden_size": D,
                             "prompts": {"add": add, "scene": self.scene_prompt, "negative": ""}},
                    "graphs": graphs,
                    **({"subject": {"file": bd.SUBJECT, "has_mask": self.mask is not None}}
                       if self.stage == 2 else {})}
            manifest = bd.manifest(self.name, self.stage, self.backbone, self.parent, model, schedule_manifest(base),
                                   {"null": NULL_TOKEN, "concepts": self.concepts}, body, training)
            if s.preview_steps > 0 and optimize and not opt.runs_here():
                log("no preview.png: the fused graphs run on CUDA only, and this ONNX Runtime has no CUDA provider")
            elif s.preview_steps > 0:
                log(f"drawing preview.png with the exported graphs ({s.preview_steps} DDIM steps)")
                draw_preview(staging.path, manifest, s, rt.threads, run.stop)
                if run.stop():
                    raise _cancel_from_weights(self, staging.file(WEIGHTS), run.checkpoints)
                manifest["preview"] = bd.PREVIEW
                written.append(bd.PREVIEW)
            run.progress.phase(self.stage, "write", f"writing the bundle {self.name!r}")
            return staging.commit(manifest, written, rt.force)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception:
            # Training is done: keep its result so that --resume retries only the export.
            try:
                _cancel_from_weights(self, staging.file(WEIGHTS), run.checkpoints)
                log(f"the trained weights are kept in {run.checkpoints}; --resume retries the export")
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise

    def finished(self, training: Any, run: Run) -> None:
        pass   # nothing stays: the bundle holds the weights


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    if requested == "auto":
        if device.type == "cuda":
            return "fp16"
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
        except (AttributeError, RuntimeError):
            return "no"
    if requested == "fp16" and device.type != "cuda":
        raise BadInput("--mixed-precision fp16 needs a CUDA device; on the CPU use bf16 or no")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadInput("--mixed-precision bf16 was asked for but this GPU has no bf16 support")
    return requested


def _half(mode: str) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)


def _autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager[object]:
    dt = _half(mode)
    return torch.autocast(device.type, dtype=dt) if dt is not None else contextlib.nullcontext()


def text_length(parts: md.Parts) -> int:
    """L: the tokenizer's model_max_length, bounded by the text encoder's positions (some tokenizer
    configs leave model_max_length at a huge sentinel)."""
    return int(min(int(parts.tokenizer.model_max_length), int(parts.text_encoder.config.max_position_embeddings)))


def random_masks(n: int, r: int, gen: torch.Generator) -> torch.Tensor:
    """Inpainting training masks [n,1,r,r], 1 = to be generated: a random box (3 in 4) or everything."""
    m = torch.zeros(n, 1, r, r)
    for i in range(n):
        if float(torch.rand(1, generator=gen)) < 0.25:
            m[i] = 1.0
            continue
        bh, bw = (max(1, int(r * (0.25 + 0.5 * float(torch.rand(1, generator=gen))))) for _ in range(2))
        y, x = randint(r - bh + 1, gen), randint(r - bw + 1, gen)
        m[i, :, y:y + bh, x:x + bw] = 1.0
    return m


class Trainer:
    """The models, optimizer and one optimisation step; everything random comes from `gen` (CPU)."""

    def __init__(self, job: SdJob, rt: Runtime, checkpoints: Path) -> None:
        s = job.settings
        self.job, self.s, self.checkpoints = job, s, checkpoints
        self.device = rt.device
        self.mode = s.mixed_precision
        torch.manual_seed(s.seed)
        self.tuning = md.Tuning(lora_rank=s.lora_rank, lora_alpha=s.lora_alpha, text_encoder=s.train_text_encoder)
        parts = self.load_parts()
        md.prepare(parts, self.tuning)
        if job.init_weights is not None:
            state, _, _ = md.read_weights(job.init_weights)
            md.load_trained(parts, state)
        self.parts = parts
        half = _half(self.mode) if self.device.type == "cuda" else None
        # Frozen weights in half precision on the GPU (memory); trained ones stay fp32.
        parts.vae.to(self.device, dtype=job.vae_dtype(half or torch.float32))
        parts.text_encoder.to(self.device, dtype=torch.float32 if (s.train_text_encoder and s.lora_rank == 0)
                              else (half or torch.float32))
        if parts.text_encoder_2 is not None:
            parts.text_encoder_2.to(self.device, dtype=half or torch.float32)
        parts.unet.to(self.device, dtype=torch.float32 if s.lora_rank == 0 else (half or torch.float32))
        for p in md.trainable(parts, self.tuning).values():
            p.data = p.data.float()
        if s.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
            if s.train_text_encoder:
                # Non-reentrant: with frozen embeddings the reentrant variant would cut the LoRA gradients.
                te = parts.text_encoder
                if hasattr(te, "activation_checkpointing_enable"):        # transformers >= 5
                    te.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        parts.unet.train()
        if s.train_text_encoder:
            parts.text_encoder.train()
        self.params = list(md.trainable(parts, self.tuning).values())
        if s.use_8bit_adam:
            import bitsandbytes as bnb  # checked importable by the CLI
            self.opt = bnb.optim.AdamW8bit(self.params, lr=s.lr, weight_decay=s.weight_decay)
        else:
            self.opt = torch.optim.AdamW(self.params, lr=s.lr, weight_decay=s.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self.mode == "fp16" and self.device.type == "cuda" else None
        self.gen = torch.Generator().manual_seed(s.seed)
        sch = parts.scheduler
        self.T = int(sch.config.num_train_timesteps)
        self.prediction = sch.config.prediction_type
        self.acp = sch.alphas_cumprod.to(torch.float32)
        self.sf = float(parts.vae.config.scaling_factor)
        self.vsf = job.base.vae_scale_factor
        self.inpainting = int(parts.unet.config.in_channels) == 9
        self.L = text_length(parts)
        # Data.
        r = s.resolution
        self.scene_crops = SceneCrops(job.scene, r, max(r, round(r * s.scene_zoom)))
        self.views = SubjectViews(job.subject.image, job.mask, r) if job.subject is not None else None
        self.prompts = {"scene": job.scene_prompt, "subject": job.subject_prompt or "", "null": ""}
        self.ids = {k: self.tokenize(v) for k, v in self.prompts.items()}
        self.cached: dict[str, tuple[torch.Tensor, ...]] = {}
        if not s.train_text_encoder:
            with torch.no_grad(), _autocast(self.device, self.mode):
                for k in self.ids:
                    self.cached[k] = tuple(c.float() for c in self.encode_text([k]))
        self.step = 0
        self.fraction = 0.0   # the skeleton's; sd keeps its constant learning rate
        self.loss_avg = 0.0

    def tokenize(self, text: str) -> torch.Tensor:
        return self.parts.tokenizer(text, padding="max_length", max_length=self.L, truncation=True,
                                    return_tensors="pt").input_ids

    # ---- what another backbone built on this one overrides (sdxl/run.py) -----
    def load_parts(self) -> md.Parts:
        return md.load_base(self.job.base)

    def encode_text(self, keys: list[str]) -> tuple[torch.Tensor, ...]:
        """The UNet's text conditioning for these prompts (sd: the text encoder's last hidden state)."""
        ids = torch.cat([self.ids[k] for k in keys]).to(self.device)
        return (self.parts.text_encoder(ids)[0],)

    def predict(self, inp: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The UNet's prediction for the noisy latents `inp` at `t` under `cond` (from encode_text)."""
        return self.parts.unet(inp, t, cond[0], return_dict=False)[0]

    # --------------------------------------------------------------------------
    def embed(self, keys: list[str]) -> tuple[torch.Tensor, ...]:
        if self.cached:
            return tuple(torch.cat(c) for c in zip(*(self.cached[k] for k in keys), strict=True))
        return self.encode_text(keys)

    def encode(self, x: torch.Tensor, sample: bool) -> torch.Tensor:
        vae = self.parts.vae
        with torch.no_grad():
            dist = vae.encode(x.to(self.device, dtype=vae.dtype)).latent_dist
            lat = dist.mean
            if sample:
                noise = torch.randn(lat.shape, generator=self.gen).to(self.device, lat.dtype)
                lat = lat + dist.std * noise
        return lat.float() * self.sf

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
        """Pixels [n,3,R,R], loss weights [n,1,R,R], prompt keys, and per-item loss factors [n]."""
        s, n = self.s, self.s.batch
        if self.views is None:
            x = self.scene_crops.sample(n, self.gen)
            return x, torch.ones(n, 1, s.resolution, s.resolution), ["scene"] * n, torch.ones(n)
        xs, ws = self.views.sample(n, self.gen)
        xc = self.scene_crops.sample(n, self.gen)
        factors = torch.tensor([1.0] * n + [s.prior_loss_weight] * n)
        return (torch.cat([xs, xc]), torch.cat([ws, torch.ones(n, 1, s.resolution, s.resolution)]),
                ["subject"] * n + ["scene"] * n, factors)

    def loss(self) -> torch.Tensor:
        x, w, keys, factors = self.batch()
        n = x.shape[0]
        keys = [("null" if float(torch.rand(1, generator=self.gen)) < self.s.caption_dropout else k) for k in keys]
        latents = self.encode(x, sample=True)
        noise = torch.randn(latents.shape, generator=self.gen).to(self.device)
        t = torch.randint(0, self.T, (n,), generator=self.gen).to(self.device)
        a = self.acp.to(self.device)[t].view(n, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        target = noise if self.prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * latents
        inp = noisy
        if self.inpainting:
            m = random_masks(n, self.s.resolution, self.gen)
            masked = self.encode(x * (1 - m), sample=False)
            ml = F.interpolate(m, size=latents.shape[-2:]).to(self.device)
            inp = torch.cat([noisy, ml, masked], dim=1)
        with _autocast(self.device, self.mode):
            pred = self.predict(inp, t, self.embed(keys))
        wl = F.avg_pool2d(w, self.vsf).to(self.device) if self.vsf > 1 else w.to(self.device)
        err = (pred.float() - target).pow(2) * wl
        per = err.sum(dim=(1, 2, 3)) / (wl.sum(dim=(1, 2, 3)) * latents.shape[1]).clamp_min(1e-6)
        f = factors.to(self.device)
        return (per * f).sum() / n if self.views is None else (per * f).sum() / (n // 2)

    def train_step(self) -> None:
        acc = max(1, self.s.grad_accum)
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(acc):
            loss = self.loss() / acc
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            total += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if self.s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.s.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.step += 1
        self.loss_avg = total if self.step == 1 else 0.95 * self.loss_avg + 0.05 * total

    def between_steps(self) -> bool:
        return False   # no previews while training: the bundle's preview.png is drawn from the export

    # ---- checkpoints --------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"version": 1, "backbone": self.job.backbone, "settings": self.s.to_dict(), "step": self.step,
                "loss_avg": self.loss_avg, "trainable": md.trained_state(self.parts, self.tuning),
                "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "extra": {"meta": self.job.meta}}

    def restore(self, saved: dict[str, Any]) -> None:
        md.load_trained(self.parts, saved["trainable"])
        if saved.get("opt") is not None:      # None: stopped after training had finished
            self.opt.load_state_dict(saved["opt"])
        if saved.get("gen") is not None:
            self.gen.set_state(saved["gen"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.step = int(saved["step"])
        self.loss_avg = float(saved["loss_avg"])

    def save_checkpoint(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        ck.save_torch(self.state(), self.checkpoints / ck.STATE)

    def release(self) -> None:
        """Drop the models and the optimiser (the export loads the fine-tuned model afresh)."""
        for name in ("parts", "opt", "params", "scaler", "cached", "scene_crops", "views"):
            if hasattr(self, name):
                delattr(self, name)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()



def _cancel_from_weights(job: SdJob, weights: Path, ckdir: Path) -> Cancelled:
    """Stopped after training: keep a checkpoint at the last step (no optimizer state is needed to export)."""
    s = job.settings
    state, _, _ = md.read_weights(weights)
    ck.save_torch({"version": 1, "backbone": job.backbone, "settings": s.to_dict(), "step": s.steps, "loss_avg": 0.0,
                   "trainable": state, "opt": None, "gen": None, "scaler": None, "extra": {"meta": job.meta},
                   "finished": True}, ckdir / ck.STATE)
    return Cancelled(job.stage, s.steps, str(ckdir))


PREVIEW_GUIDANCE = 7.5
PREVIEW_COUNT = 2


def draw_preview(folder: Path, manifest: dict[str, Any], s: SdSettings, threads: int, stop: StopFlag) -> None:
    """preview.png: two samples of Add's prompt (Stage I: the scene's) at the training resolution, drawn
    by the exported graphs with ONNX Runtime, as the engine would (sd/sample.py)."""
    from .sample import Bundle, grid
    b = Bundle(folder, threads, manifest)
    r, vsf = s.resolution, int(manifest["model"]["vae_scale_factor"])
    noise = np.random.default_rng(s.seed).standard_normal((PREVIEW_COUNT, 4, r // vsf, r // vsf)).astype(np.float32)
    x = b.txt2img(manifest["text"]["prompts"]["add"], noise, s.preview_steps, PREVIEW_GUIDANCE, should_stop=stop)
    grid(x, r, r).save(folder / bd.PREVIEW)


def save_tokenizer(tokenizer: Any, path: Path) -> None:
    """tokenizer.json without the padding and truncation transformers leaves switched on in its backend:
    the engine encodes without special tokens and adds bos/eos/pad itself (schema/README.md)."""
    from tokenizers import Tokenizer
    t = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    t.no_padding()
    t.no_truncation()
    t.save(str(path))


def resolved_precision(requested: str, device: torch.device) -> str:
    """--export-precision auto|fp32|fp16 as bundle.json's model.precision."""
    if requested == "auto":
        return "float16" if device.type == "cuda" else "float32"
    return "float16" if requested == "fp16" else "float32"


def export_precision(requested: str, device: torch.device) -> str:
    precision = resolved_precision(requested, device)
    if requested == "fp16" and device.type != "cuda":
        log("--export-precision fp16 on the CPU: the graphs are traced in half precision here; "
            "the bundle runs on CUDA only")
    return precision


# ---- Stage II's parent ------------------------------------------------------

TRAIN_HINT = "python -m pie_trainer scene IMAGE --name NAME --backbone sd --base DIR"


def load_scene(library: Path, scene: str, backbone: str = NAME) -> bd.SceneBundle:
    hint = TRAIN_HINT.replace("--backbone sd", f"--backbone {backbone}")
    return bd.load_scene_bundle(library, scene, backbone, (WEIGHTS, bd.SCENE), hint)
