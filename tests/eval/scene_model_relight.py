"""Does the learned scene model relight an object better than pie's classical light matching? (issue 13, item 1)

The route tried: the Stage I model redraws the object's low frequencies and pie's blend keeps its high ones.
For each case of a harmonization.py run (its --out folder: work/PHOTO/{truth,mask,KIND-composite,KIND-pie}.png)
pie's blended result is scaled to the scene's learned size (the bundle's scene_short_side), partly noised
(`--strength` of the schedule) and denoised by the scene's model with DDIM, the known background re-imposed
at every step (inpainting), so that only the object is redrawn; the change the model made is brought back
to the photo's size, low-passed (Gaussian, `--sigma` of the photo's height) and added to pie's result inside
the object's mask. Scores: MSE against the truth, beside the composite's and pie's own.

Runs with the trainer's python (it needs onnxruntime; numpy and Pillow only besides), after harmonization.py
learned the scenes into --library:

    $(bash build/trainer-env.sh) tests/eval/scene_model_relight.py --results /tmp/pie-harm --library /tmp/hb-lib
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageFilter

KINDS = ("transfer", "exposure", "white_balance", "gamma")


def gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array, edges repeated."""
    r = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    a = np.pad(a, r, mode="edge")
    a = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, a)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, a)


def concept_name(photo: str) -> str:
    """harmonization.py's name of the scene learned from a photo."""
    return "hb-" + photo.replace("_", "-")


def redraw(session: ort.InferenceSession, token: int, x0: np.ndarray, free: np.ndarray, strength: float,
           steps: int, rng: np.random.Generator) -> np.ndarray:
    """DDIM from x0 noised to `strength` of the linear DDPM schedule (pie's pixel-unet), the pixels where
    `free` is 0 re-imposed (noised to each step's level) after every step."""
    alpha = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    t0 = int(strength * 999)
    ts = np.linspace(t0, 0, steps + 1).round().astype(int)
    x = np.sqrt(alpha[t0]) * x0 + np.sqrt(1 - alpha[t0]) * rng.standard_normal(x0.shape)
    for t, nxt in zip(ts[:-1], ts[1:], strict=True):
        eps = session.run(None, {"x": x.astype(np.float32), "t": np.array([t], np.int64),
                                 "token": np.array([token], np.int64)})[0]
        x0_hat = np.clip((x - np.sqrt(1 - alpha[t]) * eps) / np.sqrt(alpha[t]), -1, 1)
        if nxt == 0:
            x = x0_hat
            known = x0
        else:
            x = np.sqrt(alpha[nxt]) * x0_hat + np.sqrt(1 - alpha[nxt]) * eps
            known = np.sqrt(alpha[nxt]) * x0 + np.sqrt(1 - alpha[nxt]) * rng.standard_normal(x0.shape)
        x = free * x + (1 - free) * known
    return x


def relight(pie: np.ndarray, mask: np.ndarray, bundle: Path, strength: float, sigma: float, steps: int,
            seed: int) -> np.ndarray:
    meta = json.loads((bundle / "bundle.json").read_text())
    short = meta["model"]["scene_short_side"]
    token = next(c["id"] for c in meta["tokens"]["concepts"] if c["role"] == "scene")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "denoiser.onnx"), options, providers=["CPUExecutionProvider"])
    H, W = mask.shape
    scale = short / min(H, W)
    w, h = max(4, round(W * scale) // 4 * 4), max(4, round(H * scale) // 4 * 4)
    small = np.asarray(Image.fromarray(pie).resize((w, h), Image.Resampling.BILINEAR)).astype(np.float64) / 127.5 - 1
    m = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
    free = np.asarray(m.filter(ImageFilter.MaxFilter(3))).astype(np.float64)[None, None] / 255
    x0 = small.transpose(2, 0, 1)[None]
    x = redraw(session, token, x0, free, strength, steps, np.random.default_rng(seed))
    delta = (x - x0)[0].transpose(1, 2, 0) * 127.5
    big = np.stack([np.asarray(Image.fromarray(delta[..., c].astype(np.float32), mode="F").resize((W, H),
                                                                                                   Image.Resampling.BILINEAR))
                    for c in range(3)], -1)
    low = np.stack([gaussian(big[..., c], sigma * H) for c in range(3)], -1)
    out = pie.astype(np.float64)
    out[mask] = np.clip(out + low, 0, 255)[mask]
    return out.round().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, required=True, help="a harmonization.py --out folder")
    ap.add_argument("--library", type=Path, required=True, help="the library harmonization.py learned into")
    ap.add_argument("--strength", type=float, nargs="+", default=[0.1, 0.2, 0.4],
                    help="fractions of the schedule to noise to (default 0.1 0.2 0.4)")
    ap.add_argument("--sigma", type=float, default=0.02, help="low-pass, fraction of the photo's height (0.02)")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (20)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    photos = sorted(p for p in (args.results / "work").iterdir() if (p / "truth.png").is_file()) \
        if (args.results / "work").is_dir() else []
    if not photos:
        ap.error(f"{args.results} has no work/PHOTO/truth.png: give a harmonization.py --out folder")

    def load(p: Path) -> np.ndarray:
        return np.asarray(Image.open(p).convert("RGB"))

    errors: dict[str, list[float]] = {"composite": [], "pie": [], **{f"model {s}": [] for s in args.strength}}
    for photo in photos:
        bundle = args.library / concept_name(photo.name)
        if not (bundle / "bundle.json").is_file():
            ap.error(f"no scene {bundle.name} in {args.library}")
        truth = load(photo / "truth.png").astype(np.float64)
        mask = np.asarray(Image.open(photo / "mask.png").convert("L")) > 127
        for kind in KINDS:
            if not (photo / f"{kind}-pie.png").is_file():
                continue
            pie = load(photo / f"{kind}-pie.png")
            errors["composite"].append(float(np.mean((load(photo / f"{kind}-composite.png") - truth) ** 2)))
            errors["pie"].append(float(np.mean((pie - truth) ** 2)))
            for s in args.strength:
                out = relight(pie, mask, bundle, s, args.sigma, args.steps, args.seed)
                errors[f"model {s}"].append(float(np.mean((out - truth) ** 2)))
            print(f"{photo.name:20s} {kind:14s} " + "  ".join(f"{k} {v[-1]:7.1f}" for k, v in errors.items()),
                  flush=True)
    comp = float(np.mean(errors["composite"]))
    pie_err = np.array(errors["pie"])
    print(f"\n{len(pie_err)} cases; MSE / the composite's: pie {pie_err.mean() / comp:.3f}")
    for s in args.strength:
        e = np.array(errors[f"model {s}"])
        print(f"pie + the scene model's low frequencies, strength {s}, sigma {args.sigma}: {e.mean() / comp:.3f}, "
              f"better than pie alone in {100 * np.mean(e < pie_err):.0f} % of the cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
