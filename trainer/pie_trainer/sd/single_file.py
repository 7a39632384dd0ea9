"""Single-file checkpoints (`--base FILE.safetensors`): what A1111, Forge and ComfyUI keep,
the whole model in one file in the original ("LDM") key layout.

`identify` tells the architecture from the file's tensor names and shapes alone (the
safetensors header, read without torch): SD 1.x, SD 2.x, their inpainting variants, SDXL
1.0 base, and pie's own tiny test architectures are converted; the SDXL refiner and anything
else is refused with what is missing. `.ckpt` and other pickles are refused: unpickling runs code.

`convert` turns the file into a diffusers folder with diffusers' single-file loader,
strictly offline: each architecture's configs ship with pie (sd/configs/<name>/, the
public architecture numbers), the tiny one's come from sd/tiny.py. The folder is cached
under pie's cache, keyed by the file's fingerprint, and appears there only once complete
(written beside it, then renamed), so a stopped conversion leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import BadInput
from ..core.progress import log

SUFFIX = ".safetensors"
PICKLES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
HEADER_LIMIT = 100 << 20          # a real header is a few hundred KB; more is not a safetensors file
CONFIGS = Path(__file__).resolve().parent / "configs"
# Bump when the conversion or a shipped config changes: older cached conversions are then not reused.
CONVERSION = "1"
CACHE_SUBDIR = "sd-single-file"

UNET = "model.diffusion_model."
UNET_IN = UNET + "input_blocks.0.0.weight"
UNET_CROSS = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
VAE = "first_stage_model."
VAE_IN = VAE + "encoder.conv_in.weight"
CLIP = "cond_stage_model.transformer."
CLIP_TOKENS = CLIP + "text_model.embeddings.token_embedding.weight"
OPEN_CLIP = "cond_stage_model.model."
OPEN_CLIP_TOKENS = OPEN_CLIP + "token_embedding.weight"
SDXL_MARKS = ("conditioner.embedders.",)
XL_CLIP_TOKENS = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
XL_OPEN_CLIP_TOKENS = "conditioner.embedders.1.model.token_embedding.weight"
XL_REFINER = "conditioner.embedders.0.model.text_projection"
CLIP_VOCAB = 49408


@dataclass(frozen=True)
class Arch:
    """A convertible architecture: `name` is its config folder (sd/configs/<name>) or 'tiny[-inpainting]'."""
    name: str
    title: str
    inpainting: bool

    @property
    def tiny(self) -> bool:
        return self.name.startswith("tiny")

    @property
    def xl(self) -> bool:
        """An SDXL architecture: converted for the sdxl backbone, with two text encoders."""
        return self.name in ("sdxl", "tiny-xl")

    @property
    def pad_token(self) -> str:
        return "!" if self.name.startswith("sd2") else "<|endoftext|>"


@dataclass(frozen=True)
class SingleFile:
    path: Path
    arch: Arch
    fingerprint: str
    half: bool                      # the UNet is stored in float16: keep the conversion in float16


def read_header(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The tensors' dtypes and shapes, and the file's metadata: safetensors' JSON header, nothing else."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise BadInput(f"--base {str(path)!r} is not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            size = path.stat().st_size
            if n < 2 or n > HEADER_LIMIT or n + 8 > size:
                raise BadInput(f"--base {str(path)!r} is not a safetensors file (no valid header)")
            raw = f.read(n)
    except OSError as exc:
        raise BadInput(f"cannot read --base {str(path)!r}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadInput(f"--base {str(path)!r} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise BadInput(f"--base {str(path)!r} is not a safetensors file (its header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    tensors = {k: v for k, v in header.items() if isinstance(v, dict) and isinstance(v.get("shape"), list)}
    return tensors, {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def _shape(tensors: dict[str, dict[str, Any]], key: str) -> list[int] | None:
    t = tensors.get(key)
    return [int(d) for d in t["shape"]] if t is not None else None


def identify(path: Path, tensors: dict[str, dict[str, Any]], v_prediction: bool | None = None) -> Arch:
    """Which architecture the tensors are, from their names and shapes; BadInput naming what is missing.

    The one place single files are told apart: another architecture is added here.
    `v_prediction`: what a sidecar YAML says of an SD 2.x file (None: not said)."""
    name = str(path)
    keys = tensors.keys()
    if any(k.startswith(SDXL_MARKS) for k in keys):
        return _identify_xl(name, tensors)
    if not any(k.startswith(UNET) for k in keys):
        if any(k.startswith(("down_blocks.", "conv_in.", "encoder.down_blocks.", "text_model.")) for k in keys):
            raise BadInput(f"{name} holds a single diffusers-layout part (no model.diffusion_model.* keys), not a "
                           "whole checkpoint; pass the diffusers folder it belongs to instead")
        raise BadInput(f"{name} has no UNet keys (model.diffusion_model.*); not a Stable Diffusion checkpoint")
    unet_in = _shape(tensors, UNET_IN)
    if unet_in is None or len(unet_in) != 4:
        raise BadInput(f"{name} has model.diffusion_model.* keys but no {UNET_IN}: its UNet is not a Stable "
                       "Diffusion 1.x/2.x UNet (SD 3, Flux and other transformer models are not supported)")
    if _shape(tensors, VAE_IN) is None:
        raise BadInput(f"{name} has no VAE keys (first_stage_model.*); pie needs a checkpoint with its VAE baked in")
    clip, open_clip = _shape(tensors, CLIP_TOKENS), _shape(tensors, OPEN_CLIP_TOKENS)
    if clip is None and open_clip is None:
        raise BadInput(f"{name} has no text encoder keys (cond_stage_model.transformer.* for SD 1.x, "
                       "cond_stage_model.model.* for SD 2.x); pie needs a checkpoint with its text encoder")
    channels, in_ch = unet_in[0], unet_in[1]
    if in_ch not in (4, 9):
        raise BadInput(f"{name} has a UNet of {in_ch} input channels; pie supports 4 (text-to-image) and 9 "
                       "(inpainting)" + (" (8 is an InstructPix2Pix model)" if in_ch == 8 else ""))
    inpainting = in_ch == 9
    cross = _shape(tensors, UNET_CROSS)
    context = cross[1] if cross is not None and len(cross) == 2 else None
    suffix = "-inpainting" if inpainting else ""
    if channels == 32 and context == 32 and clip is not None and clip[1] == 32:
        return Arch("tiny" + suffix, "pie's tiny test architecture" + (" (inpainting)" if inpainting else ""),
                    inpainting)
    if channels != 320:
        raise BadInput(f"{name} has a UNet of {channels} base channels (SD 1.x/2.x have 320): not an architecture "
                       "pie can convert")
    if context == 768 and clip is not None and clip == [CLIP_VOCAB, 768]:
        return Arch("sd1" + suffix, "Stable Diffusion 1.x" + (" inpainting" if inpainting else ""), inpainting)
    if context == 1024 and open_clip is not None and open_clip == [CLIP_VOCAB, 1024]:
        if inpainting:
            return Arch("sd2-inpainting", "Stable Diffusion 2.x inpainting", True)
        if v_prediction is False:
            return Arch("sd2", "Stable Diffusion 2.x (512, epsilon)", False)
        return Arch("sd2-v", "Stable Diffusion 2.x (768, v-prediction)", False)
    text = f"CLIP {clip}" if clip is not None else f"OpenCLIP {open_clip}"
    raise BadInput(f"{name} pairs a UNet of cross-attention width {context} with a {text} token embedding: "
                   "neither SD 1.x (768, CLIP ViT-L) nor SD 2.x (1024, OpenCLIP ViT-H)")


def _identify_xl(name: str, tensors: dict[str, dict[str, Any]]) -> Arch:
    """An SDXL-layout file (conditioner.embedders.*): the base, or pie's tiny SDXL; the rest refused."""
    if XL_REFINER in tensors:
        raise BadInput(f"{name} is a Stable Diffusion XL refiner (one OpenCLIP text encoder, no CLIP); pie learns on "
                       "the SDXL base: pass the base checkpoint")
    unet_in = _shape(tensors, UNET_IN)
    if unet_in is None or len(unet_in) != 4:
        raise BadInput(f"{name} has SDXL text encoders but no UNet ({UNET_IN}); not a whole SDXL checkpoint")
    if _shape(tensors, VAE_IN) is None:
        raise BadInput(f"{name} has no VAE keys (first_stage_model.*); pie needs a checkpoint with its VAE baked in")
    clip, open_clip = _shape(tensors, XL_CLIP_TOKENS), _shape(tensors, XL_OPEN_CLIP_TOKENS)
    if clip is None or open_clip is None:
        missing = " and ".join(k for k, s in ((XL_CLIP_TOKENS, clip), (XL_OPEN_CLIP_TOKENS, open_clip)) if s is None)
        raise BadInput(f"{name} is an SDXL file without both text encoders (no {missing})")
    if unet_in[1] != 4:
        raise BadInput(f"{name} is an SDXL file with a UNet of {unet_in[1]} input channels; pie supports the "
                       "4-channel SDXL base (no SDXL inpainting)")
    if unet_in[0] == 32 and clip[1] == 32 and open_clip[1] == 48:
        return Arch("tiny-xl", "pie's tiny SDXL test architecture", False)
    if unet_in[0] == 320 and clip == [CLIP_VOCAB, 768] and open_clip == [CLIP_VOCAB, 1280]:
        return Arch("sdxl", "Stable Diffusion XL 1.0", False)
    raise BadInput(f"{name} is an SDXL-layout file with a UNet of {unet_in[0]} base channels and text encoders of "
                   f"{clip[1]} and {open_clip[1]}: not SDXL 1.0's (320; 768 and 1280)")


def sidecar_v_prediction(path: Path) -> bool | None:
    """A1111's convention: FILE.yaml beside the checkpoint, its original LDM config. Only its
    `parameterization` is read (an SD 2.x file cannot tell v-prediction from epsilon by itself)."""
    yml = path.with_suffix(".yaml")
    if not yml.is_file():
        return None
    import yaml
    try:
        cfg = yaml.safe_load(yml.read_text(encoding="utf-8"))
        param = cfg["model"]["params"].get("parameterization", "eps")
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        raise BadInput(f"{yml} (beside the checkpoint) is not an LDM config with model.params") from None
    if param not in ("eps", "v"):
        raise BadInput(f"{yml} says parameterization {param!r}; pie supports 'eps' and 'v'")
    return param == "v"


def fingerprint(path: Path, arch: Arch) -> str:
    """The whole header, the size, and 16 evenly spread 64 KiB samples of the data: cheap on a
    multi-GB file, and tells fine-tunes of one architecture apart."""
    h = hashlib.sha256(f"single-file:{arch.name}:".encode())
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h.update(f.read(n))
        chunk = 1 << 16
        data = size - 8 - n
        for i in range(16):
            f.seek(8 + n + max(0, (data - chunk) * i // 15))
            h.update(f.read(chunk))
    return h.hexdigest()


def check(path: Path) -> SingleFile:
    """Refuse what cannot be converted, before anything is written or any model library loads."""
    if path.suffix.lower() in PICKLES:
        raise BadInput(f"--base {str(path)!r} is a pickle checkpoint ({path.suffix}); pie does not load pickles, "
                       "since opening one runs whatever code it holds. Convert it to .safetensors first (for "
                       "example with a trusted tool, in a sandbox) and pass that file")
    if path.suffix.lower() != SUFFIX:
        raise BadInput(f"--base {str(path)!r} is a file but not a .safetensors checkpoint; pass a single-file "
                       "checkpoint (.safetensors) or a folder in diffusers layout")
    tensors, _ = read_header(path)
    arch = identify(path, tensors, sidecar_v_prediction(path))
    unet_dtype = tensors[UNET_IN].get("dtype")
    return SingleFile(path=path, arch=arch, fingerprint=fingerprint(path, arch), half=unet_dtype == "F16")


def cache_root() -> Path:
    """pie's cache, as the engine finds it: $PIE_CACHE, else $XDG_CACHE_HOME/pie, else ~/.cache/pie."""
    if os.environ.get("PIE_CACHE"):
        return Path(os.environ["PIE_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "pie"
    return Path.home() / ".cache" / "pie"


def cached_folder(sf: SingleFile) -> Path:
    return cache_root() / CACHE_SUBDIR / f"{sf.fingerprint[:40]}-v{CONVERSION}"


# ---- the tokenizer -----------------------------------------------------------------------

# Where an installed package may already hold CLIP's BPE merges (OpenAI's CLIP, open_clip).
BPE_PACKAGES = (("open_clip", "bpe_simple_vocab_16e6.txt.gz"), ("clip", "bpe_simple_vocab_16e6.txt.gz"))
HUB_TOKENIZERS = (("openai/clip-vit-large-patch14", ""), ("stabilityai/stable-diffusion-2", "tokenizer"))
# Where pie's set-up (build/clip-vocab.sh, run by install.sh and the test command) puts it, under cache_root().
BPE_CACHED = Path("clip-bpe") / "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_MISSING = (
    "CLIP's BPE tokenizer (vocab.json and merges.txt), which is not in the file and which pie never downloads "
    "from a model hub. Any of these provides it: `bash build/clip-vocab.sh` in pie's source folder (install.sh "
    "runs it: it takes the vocabulary from the open_clip_torch package on PyPI into pie's cache); the Python "
    "package open_clip_torch (or OpenAI's clip) in the trainer's environment; openai/clip-vit-large-patch14 in "
    "the local Hugging Face cache; or convert the file to a diffusers folder elsewhere and pass that folder")


def _bpe_from_packages() -> Path | None:
    import importlib.util
    for package, fname in BPE_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            f = Path(folder) / fname
            if f.is_file():
                return f
    return None


def _tokenizer_from_hub_cache() -> tuple[Path, Path] | None:
    """vocab.json + merges.txt already in the local Hugging Face cache; nothing is fetched."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for repo, sub in HUB_TOKENIZERS:
        got = [try_to_load_from_cache(repo, f"{sub}/{f}" if sub else f) for f in ("vocab.json", "merges.txt")]
        if all(isinstance(g, str) and Path(g).is_file() for g in got):
            return Path(str(got[0])), Path(str(got[1]))
    return None


def write_clip_bpe(bpe_gz: Path, folder: Path) -> None:
    """vocab.json + merges.txt from CLIP's original merges file: the 256 byte symbols, the same
    with '</w>', one token per merge (the first 48894), then the two special tokens: 49408 in all."""
    import gzip

    from .tiny import BOS, EOS, bytes_to_unicode
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:CLIP_VOCAB - 2 * 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    if len(tokens) != CLIP_VOCAB:
        raise BadInput(f"{bpe_gz} does not hold CLIP's BPE merges ({len(tokens)} tokens, not {CLIP_VOCAB})")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _bpe_from_pie_cache() -> Path | None:
    f = cache_root() / BPE_CACHED
    return f if f.is_file() else None


def clip_tokenizer_source() -> Path | tuple[Path, Path] | None:
    return _bpe_from_packages() or _bpe_from_pie_cache() or _tokenizer_from_hub_cache()


# ---- the conversion ----------------------------------------------------------------------

def _config_folder(sf: SingleFile, into: Path) -> Path:
    """The diffusers config folder the loader reads (no weights): shipped configs plus the tokenizer."""
    if sf.arch.name == "tiny-xl":
        from ..sdxl.tiny import write_configs as write_xl_configs
        return write_xl_configs(into)
    if sf.arch.tiny:
        from .tiny import write_configs
        return write_configs(into, sf.arch.inpainting)
    shutil.copytree(CONFIGS / sf.arch.name, into)
    source = clip_tokenizer_source()
    if source is None:
        raise BadInput(f"converting {sf.path} ({sf.arch.title}) needs {TOKENIZER_MISSING}")
    # SDXL's two tokenizers share CLIP's vocabulary; only their configs (the pad token) differ.
    for tok in tokenizer_folders(into):
        if isinstance(source, tuple):
            shutil.copyfile(source[0], tok / "vocab.json")
            shutil.copyfile(source[1], tok / "merges.txt")
        else:
            write_clip_bpe(source, tok)
    return into


def tokenizer_folders(folder: Path) -> list[Path]:
    return [folder / t for t in ("tokenizer", "tokenizer_2") if (folder / t).is_dir()]


STALE_S = 24 * 3600


@contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A folder beside `final`, removed unless renamed into place: however the conversion ends
    (an error, SIGINT, a full disk), no half-written folder is left under the final name. What a
    killed conversion (SIGKILL) left is removed by the next one, once a day old (younger ones may
    be another pie converting the same file right now)."""
    import time
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".partial-{final.name}-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{final.name}-", dir=final.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(sf: SingleFile, config: Path) -> Any:
    """diffusers' single-file loader with pie's config folder: offline, no guessing of a hub repo."""
    from . import offline
    offline()
    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()   # stderr is for pie's own lines
    cls: Any = StableDiffusionInpaintPipeline if sf.arch.inpainting else StableDiffusionPipeline
    extra: dict[str, Any] = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    parts = ["unet", "vae", "text_encoder"]
    if sf.arch.xl:
        cls, extra, parts = StableDiffusionXLPipeline, {}, parts + ["text_encoder_2"]
    dtype = torch.float16 if sf.half else torch.float32
    try:
        pipe = cls.from_single_file(str(sf.path), config=str(config), local_files_only=True, torch_dtype=dtype,
                                    **extra)
    except (SingleFileComponentError, ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
        raise BadInput(f"{sf.path} looks like {sf.arch.title} but does not load as one: {exc}") from None
    for part in parts:
        model = getattr(pipe, part)
        empty = [n for n, p in model.named_parameters() if p.is_meta]
        if empty:
            raise BadInput(f"{sf.path} looks like {sf.arch.title} but lacks {len(empty)} of its {part}'s weights "
                           f"(e.g. {empty[0]})")
    return pipe


def convert(sf: SingleFile) -> Path:
    """The diffusers folder of `sf`, converted once and then reused from the cache."""
    final = cached_folder(sf)
    if (final / "model_index.json").is_file():
        return final
    with _staging(final) as tmp:
        config = _config_folder(sf, tmp / "config")
        log(f"converting {sf.path.name} ({sf.arch.title}) to diffusers layout, once; cached in {final}")
        pipe = _load(sf, config)
        out = tmp / "model"
        try:
            pipe.save_pretrained(str(out), safe_serialization=True, variant="fp16" if sf.half else None)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the converted checkpoint under {final.parent}: "
                          f"{exc.strerror or exc}", str(out)) from exc
        del pipe
        # The tokenizers as configured (their pad tokens), whatever save_pretrained made of them.
        for tok in tokenizer_folders(config):
            shutil.rmtree(out / tok.name, ignore_errors=True)
            shutil.copytree(tok, out / tok.name)
        index = json.loads((out / "model_index.json").read_text(encoding="utf-8"))
        index["_pie_single_file"] = {"source": str(sf.path), "architecture": sf.arch.name,
                                     "fingerprint": sf.fingerprint}
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(out, final)
        except OSError:
            if not (final / "model_index.json").is_file():   # not another pie that got there first
                raise
    return final
