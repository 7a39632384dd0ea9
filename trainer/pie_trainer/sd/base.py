"""The base checkpoint (`--base DIR` or `--base FILE.safetensors`): a local folder in
diffusers layout, checked from its JSON files alone, before torch or diffusers is
imported; or a single-file checkpoint (sd/single_file.py), identified from its
header and converted once into a cached diffusers folder, which is then checked the
same way.

Only local checkpoints are accepted: a hub id (`runwayml/stable-diffusion-v1-5`),
a pickle (`.ckpt`), or a folder missing one of the parts is refused with a message
saying what to do instead, and nothing ever reaches the network (the hub's offline
switches are set before the libraries load, see `pie_trainer.sd.offline`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import BadInput

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
CONFIGS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
           "scheduler": "scheduler_config.json"}
# What an SDXL checkpoint has on top (the sdxl backbone).
XL_PARTS = ("text_encoder_2", "tokenizer_2")
XL_CONFIGS = {"text_encoder_2": "config.json"}
BACKBONES = ("sd", "sdxl")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
SAMPLE = 1 << 20
LAYOUT = "model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/"
# diffusers' timestep_spacing values that the engine's schedulers follow.
SPACINGS = ("leading", "trailing", "linspace")


class OtherBase(BadInput):
    """`--base` is not the checkpoint whose fingerprint was expected (said before any conversion)."""


@dataclass
class Base:
    path: Path                  # what the user named, resolved: the folder, or the single file
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    fingerprint: str
    variant: str | None
    folder: Path | None = None  # the diffusers folder the models load from, when not `path` (a conversion)
    index: dict[str, Any] = field(default_factory=dict)   # model_index.json
    text_encoder_2: dict[str, Any] | None = None           # SDXL's second text encoder's config

    @property
    def force_zeros_for_empty_prompt(self) -> bool:
        """SDXL: whether the empty (negative) prompt is all zeros rather than its encoding."""
        return bool(self.index.get("force_zeros_for_empty_prompt", True))

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    @property
    def diffusers_folder(self) -> Path:
        return self.folder or self.path

    @property
    def in_channels(self) -> int:
        return int(self.unet.get("in_channels", 4))

    @property
    def inpainting(self) -> bool:
        return self.in_channels == 9

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.get("block_out_channels", (0,) * 4)) - 1)

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_factor * 2 ** (len(self.unet.get("block_out_channels", (320, 640, 1280, 1280))) - 1)

    @property
    def native_resolution(self) -> int:
        size = self.unet.get("sample_size") or 64
        size = min(size) if isinstance(size, (list, tuple)) else size
        side = int(size) * self.vae_scale_factor
        return max(self.size_multiple, side - side % self.size_multiple)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BadInput(f"{what} {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {str(path)!r} is not a JSON object")
    return data


def _weights_variant(folder: Path, part: str) -> tuple[list[Path], str | None]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
                   and not p.name.endswith(".index.json"))
    plain = [p for p in files if len(p.name.split(".")) == 2 or "-of-" in p.name]
    if plain:
        return plain, None
    fp16 = [p for p in files if ".fp16." in p.name]
    if fp16:
        return fp16, "fp16"
    raise BadInput(f"the base checkpoint's {part}/ folder ({folder}) holds no weights "
                   "(*.safetensors or *.bin)")


def is_sdxl(index: dict[str, Any], unet: dict[str, Any] | None, folder: Path | None = None) -> bool:
    """Whether model_index.json (and the UNet's config) describe a Stable Diffusion XL checkpoint."""
    return str(index.get("_class_name", "")).startswith("StableDiffusionXL") or "text_encoder_2" in index \
        or (unet or {}).get("addition_embed_type") == "text_time" \
        or (folder is not None and (folder / "text_encoder_2").is_dir())


def check_base(arg: str, expect: str | None = None, backbone: str = "sd") -> Base:
    """Check `--base` without loading any weights (a single file: converting it first, once);
    BadInput with a specific message otherwise; OtherBase when `expect` is given and the
    checkpoint's fingerprint is another.

    A folder's fingerprint covers every config, the tokenizer files, and each weight file's
    name, size and first and last MiB; a single file's, its header and samples of its data
    (single_file.fingerprint): a subject refuses a base that is not its scene's."""
    p = Path(arg).expanduser()
    if p.is_file():
        from . import single_file
        sf = single_file.check(p.resolve())
        # Told apart before the (long) conversion: each backbone converts only its own family.
        if sf.arch.xl and backbone != "sdxl":
            raise BadInput(f"--base {arg!r} is a Stable Diffusion XL checkpoint ({sf.arch.title}); the sd backbone "
                           "takes SD 1.x/2.x: use --backbone sdxl")
        if backbone == "sdxl" and not sf.arch.xl:
            raise BadInput(f"--base {arg!r} is {sf.arch.title}, not Stable Diffusion XL: use --backbone sd")
        if expect is not None and sf.fingerprint != expect:
            raise OtherBase(f"--base {arg!r} is another checkpoint")
        folder = single_file.convert(sf)
        base = _check_folder(folder, str(folder), backbone)
        base.path, base.folder, base.fingerprint = p.resolve(), folder, sf.fingerprint
        return base
    base = _check_folder(p, arg, backbone)
    if expect is not None and base.fingerprint != expect:
        raise OtherBase(f"--base {arg!r} is another checkpoint")
    return base


def _check_folder(p: Path, arg: str, backbone: str = "sd") -> Base:
    if not p.exists():
        if _HUB_ID.match(arg) and not arg.startswith((".", "/")):
            raise BadInput(f"--base {arg!r} looks like a Hugging Face hub id; pie never downloads models. "
                           "Download the checkpoint in diffusers layout first (for example "
                           f"`huggingface-cli download {arg} --local-dir DIR`) and pass that folder")
        raise BadInput(f"--base {arg!r} does not exist; it must be a local Stable Diffusion checkpoint: a folder "
                       f"in diffusers layout ({LAYOUT}) or a single .safetensors file")
    if not p.is_dir():
        raise BadInput(f"--base {arg!r} is neither a folder in diffusers layout ({LAYOUT}) nor a single-file "
                       "checkpoint (.safetensors)")
    if not (p / "model_index.json").is_file():
        raise BadInput(f"--base {arg!r} has no model_index.json: it is not a checkpoint in diffusers layout "
                       f"({LAYOUT})")
    index = _read_json(p / "model_index.json", "the base checkpoint's")
    xl = backbone == "sdxl"
    unet_json = p / "unet" / "config.json"
    unet_cfg = _read_json(unet_json, "the base checkpoint's unet/config.json") if unet_json.is_file() else None
    kind = str(index.get("_class_name") or "checkpoint")
    if not xl and is_sdxl(index, unet_cfg, p):
        raise BadInput(f"the base checkpoint {arg!r} is a Stable Diffusion XL checkpoint ({kind}); the sd backbone "
                       "takes Stable Diffusion 1.x/2.x checkpoints: use --backbone sdxl for it")
    if xl and not is_sdxl(index, unet_cfg, p):
        if kind.startswith("StableDiffusion") and not kind.startswith(("StableDiffusion3", "StableDiffusionXL")):
            raise BadInput(f"the base checkpoint {arg!r} is a Stable Diffusion 1.x/2.x checkpoint ({kind}), not "
                           "SDXL: use --backbone sd for it")
        raise BadInput(f"the base checkpoint {arg!r} is a {kind}, not a Stable Diffusion XL checkpoint "
                       "(StableDiffusionXLPipeline); the sdxl backbone needs one")
    if xl and kind.startswith("StableDiffusionXL") and kind != "StableDiffusionXLPipeline":
        if not (p / "text_encoder").is_dir():
            raise BadInput(f"the base checkpoint {arg!r} is an SDXL refiner ({kind}: one text encoder); the sdxl "
                           "backbone needs the SDXL base model (StableDiffusionXLPipeline)")
    parts = PARTS + (XL_PARTS if xl else ())
    layout = LAYOUT.replace("text_encoder/, tokenizer/", "text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/") \
        if xl else LAYOUT
    missing = [part for part in parts if not (p / part).is_dir()]
    if missing:
        raise BadInput(f"the base checkpoint {arg!r} has no {', '.join(m + '/' for m in missing)} folder"
                       f"{'s' if len(missing) > 1 else ''}; a diffusers-layout checkpoint needs {layout}")
    cfg: dict[str, dict[str, Any]] = {}
    for part, fname in {**CONFIGS, **(XL_CONFIGS if xl else {})}.items():
        f = p / part / fname
        if not f.is_file():
            raise BadInput(f"the base checkpoint {arg!r} has no {part}/{fname}")
        cfg[part] = _read_json(f, f"the base checkpoint's {part}/{fname}")
    for tname in ("tokenizer", "tokenizer_2") if xl else ("tokenizer",):
        tok = p / tname
        if not ((tok / "tokenizer.json").is_file()
                or ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file())):
            raise BadInput(f"the base checkpoint's {tname}/ folder ({tok}) has neither tokenizer.json nor "
                           "vocab.json + merges.txt")
    if xl:
        _same_vocabulary(p, arg)
        if int(cfg["unet"].get("in_channels", 4)) != 4:
            raise BadInput(f"the base checkpoint {arg!r} has an SDXL UNet with {cfg['unet'].get('in_channels')} "
                           "input channels; the sdxl backbone supports the text-to-image SDXL UNet (4) only")
    sd_unet = cfg["unet"].get("_class_name", "UNet2DConditionModel")
    if sd_unet != "UNet2DConditionModel":
        raise BadInput(f"the base checkpoint {arg!r} has a {sd_unet}; pie supports UNet2DConditionModel "
                       "checkpoints only (Stable Diffusion 1.x/2.x and SDXL)")
    if index.get("_class_name", "").startswith(("StableDiffusion3", "Flux")):
        raise BadInput(f"the base checkpoint {arg!r} is a {index['_class_name']}; pie supports Stable Diffusion "
                       "1.x/2.x (--backbone sd) and SDXL (--backbone sdxl) checkpoints only")
    in_ch = int(cfg["unet"].get("in_channels", 4))
    if in_ch not in (4, 9) or int(cfg["unet"].get("out_channels", 4)) != 4 or \
            int(cfg["vae"].get("latent_channels", 4)) != 4:
        raise BadInput(f"the base checkpoint {arg!r} has a UNet with {in_ch} input channels and "
                       f"{cfg['vae'].get('latent_channels')} latent channels; pie supports 4 latent channels and "
                       "UNets of 4 (text-to-image) or 9 (inpainting) input channels")
    if cfg["vae"].get("shift_factor") not in (None, 0, 0.0):
        raise BadInput(f"the base checkpoint {arg!r} has a VAE with a shift_factor; only SD 1.x/2.x VAEs are supported")
    sch = cfg["scheduler"]
    if sch.get("beta_schedule", "linear") not in ("linear", "scaled_linear") or sch.get("trained_betas"):
        raise BadInput(f"the base checkpoint's scheduler uses beta_schedule {sch.get('beta_schedule')!r}; "
                       "pie's engine supports 'linear' and 'scaled_linear'")
    if sch.get("rescale_betas_zero_snr"):
        raise BadInput("the base checkpoint's scheduler rescales its betas to zero terminal SNR; pie's engine "
                       "derives alphas_cumprod from beta_start/beta_end/beta_schedule alone and would sample it wrong")
    if sch.get("timestep_spacing") not in (None, *SPACINGS):
        raise BadInput(f"the base checkpoint's scheduler uses timestep_spacing {sch.get('timestep_spacing')!r}; "
                       f"pie supports {', '.join(SPACINGS)}")
    if sch.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction"):
        raise BadInput(f"the base checkpoint's scheduler predicts {sch.get('prediction_type')!r}; "
                       "pie supports 'epsilon' and 'v_prediction'")
    h = hashlib.sha256()
    variant = None
    for part in parts:
        folder = p / part
        if part in ("unet", "vae", "text_encoder", "text_encoder_2"):
            weights, v = _weights_variant(folder, part)
            variant = variant or v
            for w in weights:
                size = w.stat().st_size
                h.update(f"{part}/{w.name}:{size}\n".encode())
                # The first and last MiB (header, first and last tensors): cheap, and tells
                # checkpoints of the same architecture apart.
                with open(w, "rb") as fh:
                    h.update(fh.read(SAMPLE))
                    if size > 2 * SAMPLE:
                        fh.seek(size - SAMPLE)
                        h.update(fh.read(SAMPLE))
        for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.txt")):
            h.update(f"{part}/{f.name}\n".encode())
            h.update(f.read_bytes())
    return Base(path=p.resolve(), unet=cfg["unet"], vae=cfg["vae"], text_encoder=cfg["text_encoder"],
                scheduler=sch, fingerprint=h.hexdigest(), variant=variant, index=index,
                text_encoder_2=cfg.get("text_encoder_2"))


def _vocabulary(folder: Path) -> dict[str, Any] | None:
    """A tokenizer folder's vocabulary and merges (None when it cannot be read cheaply)."""
    try:
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
            return {"vocab": json.loads((folder / "vocab.json").read_text(encoding="utf-8")),
                    "merges": [m for m in merges if m and not m.startswith("#version")]}
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("model") or {}
        merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges") or []]
        return {"vocab": model.get("vocab"), "merges": merges}
    except (OSError, ValueError):
        return None


def _same_vocabulary(p: Path, arg: str) -> None:
    """An sdxl bundle ships one tokenizer.json for both encoders (schema/README.md): their vocabularies must agree."""
    a, b = _vocabulary(p / "tokenizer"), _vocabulary(p / "tokenizer_2")
    if a is None or b is None:
        raise BadInput(f"the base checkpoint {arg!r} has a tokenizer that cannot be read "
                       "(tokenizer/ or tokenizer_2/: vocab.json + merges.txt or tokenizer.json)")
    if a != b:
        raise BadInput(f"the base checkpoint {arg!r} has two tokenizers with different vocabularies (tokenizer/ and "
                       "tokenizer_2/); pie's sdxl bundle holds one tokenizer for both text encoders, so it supports "
                       "SDXL checkpoints whose tokenizers share one vocabulary (as SDXL's do)")


def schedule_manifest(base: Base) -> dict[str, Any]:
    """The bundle's `schedule` (schema/README.md): the base scheduler's, including where
    its inference timesteps go when its config says (`timestep_spacing`, `set_alpha_to_one`)."""
    s = base.scheduler
    out = {"type": "ddpm", "num_train_timesteps": int(s.get("num_train_timesteps", 1000)),
           "beta_schedule": s.get("beta_schedule", "linear"), "beta_start": float(s.get("beta_start", 0.0001)),
           "beta_end": float(s.get("beta_end", 0.02)), "prediction_type": s.get("prediction_type", "epsilon"),
           "steps_offset": int(s.get("steps_offset", 0) or 0)}
    if s.get("timestep_spacing") is not None:
        out["timestep_spacing"] = s["timestep_spacing"]
    if s.get("set_alpha_to_one") is not None:
        out["set_alpha_to_one"] = bool(s["set_alpha_to_one"])
    return out
