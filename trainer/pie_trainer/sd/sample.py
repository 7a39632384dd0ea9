"""`python -m pie_trainer sample --bundle SD_BUNDLE ...`: text-to-image from an sd bundle
*alone*, the way the engine reads it: tokenizer.json + the `text` recipe, the
four ONNX graphs through ONNX Runtime, the schedule from the manifest. DDIM
(eta 0, the manifest's `timestep_spacing`, default "leading" plus `steps_offset`;
the last step to alpha_cumprod[0], or 1 with `set_alpha_to_one`),
classifier-free guidance with `text.prompts.negative`. An inpainting UNet (9
channels) draws with everything masked (mask 1, masked-image latents of a zero image).
An sdxl bundle (schema/README.md, "Backbone sdxl") is drawn the same way with its added
inputs: input_ids_2 (padded with `model.conditioning.pad_id_2`), the pooled text_embeds,
time_ids [H, W, 0, 0, H, W], and an all-zero negative when `zero_negative` says so.

A reference for people and for the engine's tests; the tests check it against
diffusers' StableDiffusionPipeline on the same fine-tuned weights and noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BadInput
from ..core.library import read_manifest_checked


def alphas_cumprod(schedule: dict[str, Any]) -> np.ndarray:
    T = int(schedule["num_train_timesteps"])
    b0, b1 = float(schedule["beta_start"]), float(schedule["beta_end"])
    if schedule["beta_schedule"] == "scaled_linear":
        betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float64) ** 2
    else:
        betas = np.linspace(b0, b1, T, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def ddim_timesteps(schedule: dict[str, Any], steps: int) -> list[int]:
    """DDIMScheduler.set_timesteps with the manifest's `timestep_spacing` (default leading)."""
    T = int(schedule["num_train_timesteps"])
    spacing = schedule.get("timestep_spacing", "leading")
    if spacing == "trailing":
        return [int(t) for t in np.round(np.arange(T, 0, -T / steps))[:steps] - 1]
    if spacing == "linspace":
        return [int(t) for t in np.linspace(0, T - 1, steps).round()[::-1]]
    ratio = T // steps
    return [int(t) + int(schedule.get("steps_offset", 0)) for t in (np.arange(0, steps) * ratio).round()[::-1]]


def encode_prompt(tok: Any, text: dict[str, Any], prompt: str, pad_id: int | None = None) -> np.ndarray:
    """schema/README.md: no special tokens, at most L-2 ids, bos + ids + eos, pad to L (with `pad_id`,
    default text.pad_id)."""
    L = int(text["max_length"])
    ids = tok.encode(prompt, add_special_tokens=False).ids[: L - 2]
    pad = text["pad_id"] if pad_id is None else pad_id
    row = [text["bos_id"], *ids, text["eos_id"]] + [pad] * (L - 2 - len(ids))
    return np.array([row], dtype=np.int64)


class Bundle:
    def __init__(self, folder: Path, threads: int = 1, manifest: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = folder
        self.m = manifest if manifest is not None else read_manifest_checked(folder)
        if self.m.get("backbone") not in ("sd", "sdxl"):
            raise BadInput(f"{folder} is not an sd or sdxl bundle")
        self.xl = self.m["backbone"] == "sdxl"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.m["model"]["precision"] == "float16" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.sess = {k: ort.InferenceSession(str(folder / g["file"]), opts, providers=providers)
                     for k, g in self.m["graphs"].items()}
        self.tok = Tokenizer.from_file(str(folder / self.m["text"]["tokenizer"]))

    def embed(self, prompt: str) -> dict[str, np.ndarray]:
        """The UNet's text inputs for `prompt`, [1,...] each: encoder_hidden_states (and sdxl's text_embeds)."""
        text = self.m["text"]
        ids = encode_prompt(self.tok, text, prompt)
        if not self.xl:
            return {"encoder_hidden_states": self.sess["text_encoder"].run(None, {"input_ids": ids})[0]}
        cond = self.m["model"]["conditioning"]
        ids_2 = encode_prompt(self.tok, text, prompt, int(cond["pad_id_2"]))
        hidden, pooled = self.sess["text_encoder"].run(["last_hidden_state", "text_embeds"],
                                                       {"input_ids": ids, "input_ids_2": ids_2})
        return {"encoder_hidden_states": hidden, "text_embeds": pooled}

    def negative(self) -> dict[str, np.ndarray]:
        prompt = self.m["text"]["prompts"]["negative"]
        out = self.embed(prompt)
        if self.xl and prompt == "" and self.m["model"]["conditioning"]["zero_negative"]:
            out = {k: np.zeros_like(v) for k, v in out.items()}
        return out

    def txt2img(self, prompt: str, noise: np.ndarray, steps: int, guidance: float,
                should_stop: Any = None) -> np.ndarray:
        """noise [N,4,h,w] float32 -> images [N,3,H,W] float32 in [-1, 1]."""
        return self._denoise(prompt, noise.astype(np.float32), ddim_timesteps(self.m["schedule"], steps), steps,
                             guidance, should_stop)

    def img2img(self, prompt: str, image: np.ndarray, noise: np.ndarray, steps: int, guidance: float,
                strength: float) -> np.ndarray:
        """image [N,3,H,W] in [-1, 1] -> images [N,3,H,W] in [-1, 1]: its latents (the vae_encoder graph) noised
        to the step `strength` of the way back (diffusers' img2img: the last int(steps x strength) of the
        DDIM steps), then denoised; noise [N,4,H/f,W/f]."""
        if self.m["model"]["unet_in_channels"] != 4:
            raise BadInput("img2img draws with a text-to-image UNet (4 input channels) only")
        init = self.sess["vae_encoder"].run(None, {"image": image.astype(np.float32)})[0].astype(np.float64)
        ts = ddim_timesteps(self.m["schedule"], steps)
        ts = ts[steps - min(int(steps * strength), steps):]
        if not ts:
            return image
        a = alphas_cumprod(self.m["schedule"])[ts[0]]
        x = (math.sqrt(a) * init + math.sqrt(1 - a) * noise).astype(np.float32)
        return self._denoise(prompt, x, ts, steps, guidance, None)

    def _denoise(self, prompt: str, x: np.ndarray, ts: list[int], steps: int, guidance: float,
                 should_stop: Any) -> np.ndarray:
        """DDIM from the latents `x` over the timesteps `ts` (of a `steps`-step schedule), then decoded."""
        model = self.m["model"]
        noise = x
        n = noise.shape[0]
        extra = None
        if model["unet_in_channels"] == 9:
            # An inpainting UNet draws text-to-image with everything masked: mask 1, masked image all 0.
            vsf = int(model["vae_scale_factor"])
            zeros = np.zeros((n, 3, noise.shape[2] * vsf, noise.shape[3] * vsf), np.float32)
            masked = self.sess["vae_encoder"].run(None, {"image": zeros})[0]
            extra = np.concatenate([np.ones((n, 1, *noise.shape[2:]), np.float32), masked], axis=1)
            extra = np.concatenate([extra, extra])
        cond, uncond = self.embed(prompt), self.negative()
        text_feeds = {k: np.concatenate([np.repeat(uncond[k], n, axis=0), np.repeat(cond[k], n, axis=0)])
                      .astype(np.float32) for k in cond}
        if self.xl:
            vsf = int(model["vae_scale_factor"])
            H, W = noise.shape[2] * vsf, noise.shape[3] * vsf
            text_feeds["time_ids"] = np.tile(np.array([[H, W, 0, 0, H, W]], np.float32), (2 * n, 1))
        sch = self.m["schedule"]
        acp = alphas_cumprod(sch)
        ratio = int(sch["num_train_timesteps"]) // steps
        for t in ts:
            if should_stop is not None and should_stop():
                break
            inp = np.concatenate([x, x])
            if extra is not None:
                inp = np.concatenate([inp, extra], axis=1)
            out = self.sess["unet"].run(None, {"sample": inp, "timestep": np.full(2 * n, t, np.int64),
                                               **text_feeds})[0].astype(np.float64)
            u, c = out[:n], out[n:]
            pred = u + guidance * (c - u)
            a = acp[t]
            prev = t - ratio
            a_prev = acp[prev] if prev >= 0 else (1.0 if sch.get("set_alpha_to_one") else acp[0])
            if sch["prediction_type"] == "v_prediction":
                x0 = math.sqrt(a) * x - math.sqrt(1 - a) * pred
                eps = math.sqrt(a) * pred + math.sqrt(1 - a) * x
            else:
                x0 = (x - math.sqrt(1 - a) * pred) / math.sqrt(a)
                eps = pred
            x = (math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps).astype(np.float32)
        return self.sess["vae_decoder"].run(None, {"latent": x})[0]


def grid(x: np.ndarray, h: int, w: int) -> Any:
    """[N,3,H,W] in [-1, 1] -> a PIL image, samples in a near-square grid."""
    from PIL import Image
    n = x.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = ((np.clip(x[i], -1, 1).transpose(1, 2, 0) + 1) * 127.5).round()
    return Image.fromarray(out)


def prompt_for(m: dict[str, Any], spec: str | None, text: str | None) -> str:
    if text is not None:
        return text
    prompts = m["text"]["prompts"]
    if spec is None or spec == "add":
        return prompts["add"]
    if spec == "null":
        return prompts["negative"]
    for c in m["tokens"]["concepts"]:
        if spec in (c.get("identifier"), c.get("name"), c.get("role"), str(c.get("id"))):
            return prompts["add"] if c["role"] == "subject" else c.get("prompt") or prompts.get("scene", "")
    raise BadInput(f"no concept {spec!r} in this bundle")


def run_sample(args: Any) -> None:
    from ..core.progress import log
    folder = Path(args.bundle)
    b = Bundle(folder, args.threads or 1)
    model = b.m["model"]
    mult, vsf = int(model["size_multiple"]), int(model["vae_scale_factor"])
    h, w = args.height or model["resolution"], args.width or model["resolution"]
    if h % mult or w % mult:
        raise BadInput(f"--height and --width must be multiples of {mult}")
    text = prompt_for(b.m, args.token, args.prompt)
    rng = np.random.default_rng(args.seed)
    noise = rng.standard_normal((args.count, 4, h // vsf, w // vsf)).astype(np.float32)
    x = np.clip(b.txt2img(text, noise, args.steps, args.guidance), -1, 1)
    grid(x, h, w).save(args.out)
    if args.npy:
        np.save(args.npy, x.astype(np.float32))
    log(f"wrote {args.count} samples of {text!r} at {w}x{h} to {args.out}")
