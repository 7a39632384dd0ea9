#!/usr/bin/env python3
"""Ground-truth harmonization benchmark: pie against classical baselines on composites of real photos.

The photos in ../shared/data/harmonization/ (NAME.png, an object in its own
scene, and NAME_mask.png, 255 = object) carry their own ground truth. As the
iHarmony4 data set made its composites, the object's appearance is changed
inside its mask only, and every method must bring it back to how it looked
in the photo; the original photo is the answer key.

Composites, four per photo (one of each kind), parameters drawn from a
generator seeded by (--seed, photo, kind), so the same seed gives the same
composites:

- transfer: Reinhard colour transfer in CIE Lab (per-channel mean and
  standard deviation) toward another photo's statistics (that photo's object
  or its whole image, drawn), at a drawn strength 0.5-1 (full strength
  between unrelated photos is a far larger change than iHarmony4's
  same-category transfers);
- exposure: a gain of +-0.4..1.0 stops in linear light;
- white balance: per-channel gains in linear light, a warm/cool shift of
  0.12-0.30 plus a green/magenta tint up to 0.06, normalised so that the
  luminance gain is 1 (a pure colour cast);
- gamma: the sRGB values raised to 1.25-1.6 or its inverse.

A composite whose fMSE against the truth is under 100 (the change would be
invisible, iHarmony4 dropped those too) is drawn again, up to 20 times.

Methods, each given the composite and the mask only:

- composite: the composite as it is (the score to beat);
- lab: global Lab mean/std transfer of the object toward the statistics of
  the composite outside the mask (the background), the classical baseline;
- poisson: OpenCV seamlessClone (NORMAL_CLONE) of the composite's object into
  its background. The destination is the composite with the object inpainted
  from the background around it (cv2.inpaint, Telea): OpenCV takes the
  destination's gradients in a band a few pixels inside the mask's edge, so
  the destination's inside matters and must be neither the truth (a leak) nor
  the composite itself (the clone would then return the composite);
- pie: `pie learn-scene` once per photo on the original photo with the object
  excluded (`--exclude MASK`: its pixels never reach the loss, so the truth
  does not leak), then `pie blend COMPOSITE --mask MASK --concept hb-NAME`
  per composite.

Scores, 8-bit images in 0..255 as iHarmony4 scores them: MSE and PSNR over
the whole image, fMSE = MSE over the mask's pixels. (iHarmony4 scores at
256x256; these photos are 512x512 with objects of 3-16 % of the image, so the
paper's figures are context, not a target; --size 256 scores at the
paper's size.) The goals: pie's mean MSE at most
half the composite's, and pie better (lower MSE) than both lab and poisson in
at least 80 % of the cases.

Writes into --out: results.md, results.json, sheet-CASE.png (truth,
composite, lab, poisson, pie, with crops around the object) and every input
and output image under work/.

Run it with the eval environment's python:
  PY=$(ls ~/.cache/pie/eval-venv-*/bin/python)
  $PY tests/eval/harmonization.py --methods composite,lab,poisson --out /tmp/pie-harm
  $PY tests/eval/harmonization.py --preset quick --library /tmp/hb-lib --reuse --out /tmp/pie-harm
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw
from skimage.color import lab2rgb, rgb2lab

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "bench"))
import evaluate  # noqa: E402  (its runner of the pie binary and its sheet font)
import scores  # noqa: E402  (evaluate.py's scores: its harmonization score is checked here against the truth)
from common import machine, pie_env  # noqa: E402  (bench/common.py)

KINDS = ("transfer", "exposure", "white_balance", "gamma")
METHODS = ("composite", "lab", "poisson", "pie")
# iHarmony4 test set, all four subsets (Cong et al. 2020, DoveNet; CDTNet: Cong et al. 2022): MSE, PSNR, fMSE.
PAPER = {"iHarmony4 composite": (172.47, 31.63, 1387.30), "CDTNet (iHarmony4)": (23.75, 38.23, 252.05)}
MIN_FMSE = 100.0
MAX_DRAWS = 20


# --------------------------------------------------------------------------- photos


@dataclass(frozen=True)
class Photo:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray   # (H, W) bool, True = object


def default_data() -> Path:
    """../shared/data/harmonization relative to the repository root, as evaluate.py finds ../shared/data."""
    return ROOT.parent / "shared/data/harmonization"


def load_photos(data: Path, names: list[str] | None = None, size: int | None = None) -> list[Photo]:
    """Every NAME.png with a NAME_mask.png in `data` (sorted by name), or the given names, the longer side
    scaled to `size` if given (Lanczos; the mask nearest-neighbour); a clear error for a missing folder or mask,
    a size mismatch, or a mask that is empty or covers the whole photo."""
    if not data.is_dir():
        raise FileNotFoundError(f"no harmonization photos at {data} (expected NAME.png + NAME_mask.png)")
    found = sorted(p.stem for p in data.glob("*.png") if not p.stem.endswith("_mask"))
    if names:
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise ValueError(f"unknown photos {unknown}; in {data}: {found}")
        found = [n for n in found if n in names]
    photos = []
    for n in found:
        mpath = data / f"{n}_mask.png"
        if not mpath.is_file():
            raise FileNotFoundError(f"{data / (n + '.png')} has no mask {mpath.name}")
        im, mim = Image.open(data / f"{n}.png").convert("RGB"), Image.open(mpath).convert("L")
        if mim.size != im.size:
            raise ValueError(f"{mpath.name} is {mim.size}, the photo {im.size}")
        if size:
            f = size / max(im.size)
            wh = (max(1, round(im.width * f)), max(1, round(im.height * f)))
            im, mim = im.resize(wh, Image.Resampling.LANCZOS), mim.resize(wh, Image.Resampling.NEAREST)
        img, mask = np.asarray(im), np.asarray(mim) > 127
        if not mask.any() or mask.all():
            raise ValueError(f"{mpath.name} is {'empty' if not mask.any() else 'all object'}")
        photos.append(Photo(n, img, mask))
    if not photos:
        raise FileNotFoundError(f"no NAME.png with NAME_mask.png in {data}")
    return photos


# --------------------------------------------------------------------------- colour helpers


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1)."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def to_u8(v: np.ndarray) -> np.ndarray:
    return np.clip(np.round(v * 255.0), 0, 255).astype(np.uint8)


def to_lab(img: np.ndarray) -> np.ndarray:
    return rgb2lab(img.astype(np.float64) / 255.0)


def from_lab(lab: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # out-of-gamut Lab values are clipped to the sRGB cube, which is meant here
        warnings.simplefilter("ignore")
        return to_u8(lab2rgb(lab))


def lab_stats(img: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the CIE Lab (D65) values of `img`'s pixels in `region`, each of shape (3,)."""
    px = to_lab(img)[region]
    if px.shape[0] == 0:
        raise ValueError("empty region")
    return px.mean(axis=0), px.std(axis=0)


def transfer_lab(lab: np.ndarray, region: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Reinhard transfer in Lab: the pixels in `region` get the given per-channel mean and std
    ((x - mu) / sigma * std + mean); the rest is left as it is."""
    out = lab.copy()
    px = lab[region]
    mu, sd = px.mean(axis=0), px.std(axis=0)
    out[region] = (px - mu) / np.maximum(sd, 1e-6) * std + mean
    return out


def reinhard(img: np.ndarray, region: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """transfer_lab on an 8-bit RGB image; only the pixels in `region` change (out-of-gamut values clipped)."""
    out = img.copy()
    out[region] = from_lab(transfer_lab(to_lab(img), region, mean, std))[region]
    return out


def _in_mask(img: np.ndarray, mask: np.ndarray, changed: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[mask] = changed[mask]
    return out


def exposure(img: np.ndarray, mask: np.ndarray, stops: float) -> np.ndarray:
    return _in_mask(img, mask, to_u8(linear_to_srgb(srgb_to_linear(img / 255.0) * 2.0 ** stops)))


def white_balance(img: np.ndarray, mask: np.ndarray, gains: np.ndarray) -> np.ndarray:
    return _in_mask(img, mask, to_u8(linear_to_srgb(srgb_to_linear(img / 255.0) * gains)))


def gamma(img: np.ndarray, mask: np.ndarray, g: float) -> np.ndarray:
    return _in_mask(img, mask, to_u8((img / 255.0) ** g))


# --------------------------------------------------------------------------- composites


@dataclass(frozen=True)
class Composite:
    photo: str
    kind: str
    params: dict
    image: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.photo}-{self.kind}"


def case_rng(seed: int, photo: str, kind: str) -> np.random.Generator:
    """The generator of one case: from (seed, photo, kind) only, so cases do not depend on each other or on
    which photos are run (crc32: Python's hash() of a string changes between runs)."""
    return np.random.default_rng([seed, zlib.crc32(photo.encode()), KINDS.index(kind)])


def _signed(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi))


def draw_composite(photo: Photo, kind: str, others: list[Photo], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One draw of a composite of `kind` and the parameters that made it."""
    img, m = photo.image, photo.mask
    if kind == "transfer":
        if not others:
            raise ValueError("a colour transfer needs another photo")
        other = others[int(rng.integers(len(others)))]
        source = "object" if rng.random() < 0.5 else "image"
        region = other.mask if source == "object" else np.ones(other.mask.shape, bool)
        t_mean, t_std = lab_stats(other.image, region)
        own_mean, own_std = lab_stats(img, m)
        a = float(rng.uniform(0.5, 1.0))
        mean, std = (1 - a) * own_mean + a * t_mean, (1 - a) * own_std + a * t_std
        return reinhard(img, m, mean, std), {"from": other.name, "stats_of": source, "strength": round(a, 4)}
    if kind == "exposure":
        stops = _signed(rng, 0.4, 1.0)
        return exposure(img, m, stops), {"stops": round(stops, 4)}
    if kind == "white_balance":
        t, tint = _signed(rng, 0.12, 0.30), float(rng.uniform(-0.06, 0.06))
        g = np.array([1 + t, 1 + tint, 1 - t])
        g /= g @ np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 luminance gain 1: a cast, not an exposure change
        return white_balance(img, m, g), {"gains": [round(float(x), 4) for x in g]}
    if kind == "gamma":
        ex = float(np.exp(_signed(rng, math.log(1.25), math.log(1.6))))
        return gamma(img, m, ex), {"gamma": round(ex, 4)}
    raise ValueError(f"unknown composite kind {kind}; known: {', '.join(KINDS)}")


def make_composite(photo: Photo, kind: str, others: list[Photo], seed: int) -> Composite:
    rng = case_rng(seed, photo.name, kind)
    draws = 0
    while True:   # drawn again while the composite is too close to the photo, MAX_DRAWS times at most
        draws += 1
        img, params = draw_composite(photo, kind, others, rng)
        if fmse(img, photo.image, photo.mask) >= MIN_FMSE or draws == MAX_DRAWS:
            break
    params["draws"] = draws
    return Composite(photo.name, kind, params, img)


def make_composites(photos: list[Photo], seed: int, kinds: tuple[str, ...] = KINDS,
                    pool: list[Photo] | None = None) -> list[Composite]:
    """One composite per photo and kind; colour transfers draw their source from `pool` (default: `photos`)
    other than the photo itself."""
    pool = photos if pool is None else pool
    return [make_composite(p, k, [o for o in pool if o.name != p.name], seed) for p in photos for k in kinds]


# --------------------------------------------------------------------------- scores


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all pixels and channels, values in 0..255."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} and {b.shape}")
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def fmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """MSE over the mask's pixels (all channels) only."""
    if a.shape != b.shape or a.shape[:2] != mask.shape:
        raise ValueError(f"sizes differ: {a.shape}, {b.shape}, mask {mask.shape}")
    if not mask.any():
        raise ValueError("empty mask")
    return float(np.mean((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2))


def psnr(mse_value: float) -> float:
    """10 log10(255² / MSE) in dB; inf for identical images."""
    return math.inf if mse_value == 0 else 10.0 * math.log10(255.0 ** 2 / mse_value)


def score(result: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    m = mse(result, truth)
    outside = ~mask
    return {"mse": m, "psnr": psnr(m), "fmse": fmse(result, truth, mask),
            # how far a method strays outside the object, where the composite is already right
            "outside_max": int(np.abs(result.astype(np.int16) - truth.astype(np.int16))[outside].max())}


def agreement(photos: list[Photo], composites: list[Composite]) -> dict:
    """How often evaluate.py's truth-free harmonization score (scores.harmonization at the object's outline)
    ranks the original photo better (lower) than its composite: the check that the score tells better from
    worse. Per case: both values; overall and per kind: the fraction where the truth wins."""
    by_name = {p.name: p for p in photos}
    truth = {p.name: scores.harmonization(p.image, p.mask) for p in photos}
    cases = []
    for c in composites:
        v = scores.harmonization(c.image, by_name[c.photo].mask)
        cases.append({"case": c.name, "kind": c.kind, "truth": truth[c.photo], "composite": v,
                      "truth_better": truth[c.photo] < v})
    rate = float(np.mean([c["truth_better"] for c in cases])) if cases else math.nan
    kinds = {k: float(np.mean([c["truth_better"] for c in cases if c["kind"] == k]))
             for k in KINDS if any(c["kind"] == k for c in cases)}
    return {"rate": rate, "kinds": kinds, "cases": cases}


def ranking(rows: list[dict]) -> dict:
    """How often evaluate.py's truth-free harmonization score orders two methods' results of one case as their
    fMSE against the truth does: the check that the score can tell a better result from a worse one, which is
    what the pairs' evaluation asks of it (agreement() only asks it to prefer the truth to the composite).
    Per pair of methods and overall: the fraction of cases where the lower score has the lower fMSE; 0.5 is
    chance, below it the score ranks methods the wrong way round."""
    per: dict[str, list[bool]] = {}
    for r in rows:
        ms = [m for m in r["scores"] if "outline" in r["scores"][m]]
        for i, a in enumerate(ms):
            for b in ms[i + 1:]:
                sa, sb = r["scores"][a], r["scores"][b]
                if sa["fmse"] == sb["fmse"] or sa["outline"] == sb["outline"]:
                    continue
                per.setdefault(f"{a}/{b}", []).append((sa["fmse"] < sb["fmse"]) == (sa["outline"] < sb["outline"]))
    every = [v for vs in per.values() for v in vs]
    return {"rate": float(np.mean(every)) if every else math.nan, "pairs": len(every),
            "by_methods": {k: float(np.mean(v)) for k, v in per.items()}}


# --------------------------------------------------------------------------- baselines


def lab_baseline(composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The object's Lab mean and std set to those of the background (the composite outside the mask)."""
    return reinhard(composite, mask, *lab_stats(composite, ~mask))


def poisson_raw(composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone(NORMAL_CLONE) of the composite's object into the background, unchanged at its place.
    Destination: the composite with the object inpainted from its surroundings (see the module docstring)."""
    m8 = np.where(mask, 255, 0).astype(np.uint8)
    bgr = np.ascontiguousarray(composite[..., ::-1])
    dst = cv2.inpaint(bgr, m8, 3, cv2.INPAINT_TELEA)
    ys, xs = np.nonzero(m8)
    x, y, w, h = xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
    # OpenCV puts the mask's bounding box at center - (w/2, h/2) (integer division): back where it was.
    center = (int(x + w // 2), int(y + h // 2))
    out = cv2.seamlessClone(bgr, dst, m8.copy(), center, cv2.NORMAL_CLONE)  # it writes into the mask it gets
    return np.ascontiguousarray(out[..., ::-1])


def poisson_baseline(composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """poisson_raw inside the mask, the composite outside. OpenCV solves over the mask's whole bounding box, and
    on these photos it moves pixels outside the mask too: 0.4 levels on average, but up to about 80 levels
    within 10-20 px of a concave or high-contrast outline (measured on the seed-0 composites). The task is the
    object only, as for the other methods, and keeping the outside lowers Poisson's MSE a little (343 against
    352 on those composites; its fMSE is the same)."""
    return _in_mask(composite, mask, poisson_raw(composite, mask))


# --------------------------------------------------------------------------- pie


@dataclass
class Pie(evaluate.Pie):
    """evaluate.py's runner of the pie binary, with Learn Scene leaving the object out and Blend."""

    blend_args: list[str] = field(default_factory=list)

    def learn_scene(self, photo: Path, mask: Path, name: str) -> dict | None:  # type: ignore[override]
        if self.reuse and self.has(name):
            print(f"  (reusing the concept {name})")
            return None
        return self._run(["learn-scene", str(photo), "--name", name, "--exclude", str(mask), "--library",
                          str(self.library), "--force", *self._quick(), *self.scene_args], f"pie learn-scene {name}")

    def blend(self, composite: Path, mask: Path, concept: str, out: Path, seed: int) -> dict:
        return self._run(["blend", str(composite), "--mask", str(mask), "--concept", concept, "--library",
                          str(self.library), "--out", str(out), "--seed", str(seed), *self.blend_args],
                         f"pie blend {concept}")


def concept_name(photo: str) -> str:
    return "hb-" + photo.replace("_", "-")


# --------------------------------------------------------------------------- sheets


def crop_box(mask: np.ndarray, margin: float = 0.25) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the mask's bounds grown by `margin` of their larger side, inside the image."""
    ys, xs = np.nonzero(mask)
    m = int(margin * max(ys.max() - ys.min(), xs.max() - xs.min())) + 4
    h, w = mask.shape
    return max(0, xs.min() - m), max(0, ys.min() - m), min(w, xs.max() + 1 + m), min(h, ys.max() + 1 + m)


def contact_sheet(panels: list[tuple[str, np.ndarray, str]], mask: np.ndarray, title: str,
                  size: int = 256) -> Image.Image:
    """Row 1: each panel scaled to `size` wide; row 2: its crop around the object, scaled to `size` wide."""
    font, small = evaluate._font(14), evaluate._font(12)
    H, W = panels[0][1].shape[:2]
    ph = round(H * size / W)
    x0, y0, x1, y1 = crop_box(mask)
    ch = round((y1 - y0) * size / (x1 - x0))
    colw, label_h, cap_h, title_h = size + 8, 20, 34, 24
    sheet = Image.new("RGB", (colw * len(panels) + 8, title_h + label_h + ph + 8 + ch + cap_h + 8), "white")
    d = ImageDraw.Draw(sheet)
    d.text((8, 4), title, fill="black", font=font)
    for i, (label, img, caption) in enumerate(panels):
        x = 8 + i * colw
        d.text((x, title_h), label, fill="black", font=font)
        sheet.paste(Image.fromarray(img).resize((size, ph), Image.Resampling.LANCZOS), (x, title_h + label_h))
        crop = Image.fromarray(img[y0:y1, x0:x1]).resize((size, ch), Image.Resampling.LANCZOS)
        sheet.paste(crop, (x, title_h + label_h + ph + 8))
        for j, line in enumerate(caption.split("\n")):
            d.text((x, title_h + label_h + ph + 8 + ch + 2 + 15 * j), line, fill="black", font=small)
    return sheet


# --------------------------------------------------------------------------- tables


def _f(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "—"
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def summary(rows: list[dict], methods: list[str]) -> dict:
    """Means per method over the cases that have every method, pie's MSE ratio and win rate."""
    full = [r for r in rows if all(m in r["scores"] for m in methods)]
    out: dict = {"cases": len(full), "means": {}}
    for m in methods:
        if not full:
            break
        ms = [r["scores"][m]["mse"] for r in full]
        ps = [r["scores"][m]["psnr"] for r in full]
        out["means"][m] = {"mse": float(np.mean(ms)), "fmse": float(np.mean([r["scores"][m]["fmse"] for r in full])),
                           # per-image PSNR averaged, as iHarmony4 reports it; an exact result (inf) is left out
                           "psnr": float(np.mean([p for p in ps if math.isfinite(p)] or [math.inf]))}
    if full and "pie" in methods and "composite" in methods:
        out["pie_mse_ratio"] = out["means"]["pie"]["mse"] / out["means"]["composite"]["mse"]
        rivals = [m for m in ("lab", "poisson") if m in methods]
        if rivals:
            wins = [all(r["scores"]["pie"]["mse"] < r["scores"][b]["mse"] for b in rivals) for r in full]
            out["pie_beats"] = rivals
            out["pie_win_rate"] = float(np.mean(wins))
    return out


def markdown(rows: list[dict], meta: dict, methods: list[str]) -> str:
    out = [f"Harmonization benchmark, {meta['date']}, {meta['machine']}; commit `{meta['commit']}`; composite seed "
           f"{meta['seed']}; pie preset `{meta['preset']}`, blend seed {meta['pie_seed']}.", "",
           "Scores against the original photo, 0..255: MSE and PSNR over the whole image, fMSE over the object's "
           "mask.", "",
           "| case | composite change | " + " | ".join(f"{m} MSE / PSNR / fMSE" for m in methods) + " |",
           "|---|---|" + "---:|" * len(methods)]
    for r in rows:
        cells = []
        for m in methods:
            s = r["scores"].get(m)
            cells.append("—" if s is None else f"{_f(s['mse'])} / {_f(s['psnr'])} / {_f(s['fmse'], 1)}")
        out.append(f"| {r['case']} | {r['change']} | " + " | ".join(cells) + " |")
    s = summary(rows, methods)
    out += ["", f"Means over {s['cases']} cases:", "", "| method | MSE | PSNR (dB) | fMSE |", "|---|---:|---:|---:|"]
    for m, v in s["means"].items():
        out.append(f"| {m} | {_f(v['mse'])} | {_f(v['psnr'])} | {_f(v['fmse'])} |")
    for name, (a, b, c) in PAPER.items():
        out.append(f"| *{name}, paper (256x256)* | {a:.2f} | {b:.2f} | {c:.2f} |")
    if "pie_mse_ratio" in s:
        r, w = s["pie_mse_ratio"], s.get("pie_win_rate")
        out += ["", f"pie MSE / composite MSE: {r:.3f} (goal ≤ 0.5: {'pass' if r <= 0.5 else 'FAIL'})"]
        if w is not None:
            out.append(f"pie better (MSE) than {' and '.join(s['pie_beats'])}: {100 * w:.0f} % of the cases "
                       f"(goal ≥ 80 %: {'pass' if w >= 0.8 else 'FAIL'})")
    ag = meta.get("pair_score_agreement")
    if ag:
        out += ["", f"evaluate.py's harmonization score (scores.harmonization at the object's outline) ranks the "
                    f"truth better than the composite in {100 * ag['rate']:.0f} % of {len(ag['cases'])} cases ("
                + ", ".join(f"{k} {100 * v:.0f} %" for k, v in ag["kinds"].items()) + ")."]
    rk = ranking(rows)
    if rk["pairs"]:
        out += ["", f"The same score orders two methods' results of a case as their fMSE does in "
                    f"{100 * rk['rate']:.0f} % of {rk['pairs']} pairs (chance: 50 %; "
                + ", ".join(f"{k} {100 * v:.0f} %" for k, v in rk["by_methods"].items()) + ")."]
    failed = [f"{r['case']}: {m}" for r in rows for m in r.get("errors", {})]
    if failed:
        out += ["", "Failed: " + "; ".join(failed)]
    timed = [r for r in rows if r.get("timings", {}).get("blend")]
    if timed:
        out += ["", "| case | pie learn-scene | pie blend |", "|---|---|---|"]
        for r in timed:
            ls, bl = r["timings"].get("learn_scene"), r["timings"]["blend"]
            scene = f"{ls['wall_s']:.1f} s, {ls['peak_rss_mb']:.0f} MB" if ls else "(reused, or an earlier case)"
            out.append(f"| {r['case']} | {scene} | {bl['wall_s']:.1f} s, {bl['peak_rss_mb']:.0f} MB |")
    return "\n".join(out) + "\n"


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no inf; PSNR of an exact result
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def write_results(out: Path, meta: dict, rows: list[dict], methods: list[str]) -> str:
    md = markdown(rows, meta, methods)
    (out / "results.md").write_text(md)
    data = {"meta": meta, "summary": summary(rows, methods), "cases": rows}
    (out / "results.json").write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    return md


def describe(c: Composite) -> str:
    p = c.params
    if c.kind == "transfer":
        return f"Lab transfer from {p['from']} ({p['stats_of']}), strength {p['strength']:.2f}"
    if c.kind == "exposure":
        return f"exposure {p['stops']:+.2f} stops"
    if c.kind == "white_balance":
        return "white balance gains " + "/".join(f"{g:.2f}" for g in p["gains"])
    return f"gamma {p['gamma']:.2f}"


def git_commit() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out-harmonization",
                    help="output folder (default tests/eval/out-harmonization)")
    ap.add_argument("--data", type=Path, default=default_data(),
                    help="the photos and masks (default: ../shared/data/harmonization from the repository root)")
    ap.add_argument("--photos", default="", help="comma-separated photo names (default: all)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--size", type=int, default=None,
                    help="scale the photos' longer side to N px first (256: iHarmony4's scoring size; default: as "
                         "they are, 512)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the composites (default 0)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--pie", type=Path, default=ROOT / "target/release/pie", help="the pie binary")
    ap.add_argument("--preset", choices=("default", "quick"), default="default",
                    help="pie learn-scene's preset (quick: --quick)")
    ap.add_argument("--library", type=Path, default=None,
                    help="concept library for pie (default: a temporary folder, removed at the end)")
    ap.add_argument("--reuse", action="store_true", help="keep scenes already learned in --library")
    ap.add_argument("--pie-seed", type=int, default=0, help="seed for pie blend (default 0)")
    ap.add_argument("--scene-args", default="", help="further `pie learn-scene` arguments")
    ap.add_argument("--blend-args", default="", help="further `pie blend` arguments")
    ap.add_argument("--ort-dylib", default=None, help="ONNX Runtime library (default: as evaluate.py)")
    ap.add_argument("--trainer-python", default=None, help="the trainer's python (default: as evaluate.py)")
    ap.add_argument("--trainer-path", type=Path, default=ROOT / "trainer", help="PIE_TRAINER_PATH (default trainer/)")
    ap.add_argument("--nice", type=int, default=10, help="run pie under `nice -n N` (0: not; default 10)")
    args = ap.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    kinds = tuple(k for k in args.kinds.split(",") if k)
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m}; known: {','.join(METHODS)}")
    for k in kinds:
        if k not in KINDS:
            ap.error(f"unknown composite kind {k}; known: {','.join(KINDS)}")
    if "pie" in methods and not args.pie.is_file():
        ap.error(f"no pie binary at {args.pie}: build it (cargo build --release) or leave pie out of --methods")
    try:
        if args.size is not None and args.size < 16:
            raise ValueError(f"--size {args.size} is too small (at least 16 px)")
        pool = load_photos(args.data, size=args.size)
        photos = load_photos(args.data, [n for n in args.photos.split(",") if n] or None, args.size)
    except (OSError, ValueError) as e:
        ap.error(str(e))

    out = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    tmp_lib = None
    pie = None
    if "pie" in methods:
        library = args.library
        if library is None:
            tmp_lib = tempfile.mkdtemp(prefix="pie-harm-lib.")
            library = Path(tmp_lib)
        library.mkdir(parents=True, exist_ok=True)
        library = library.resolve()
        pie = Pie(args.pie.resolve(), library, args.preset,
                  pie_env(library, args.ort_dylib, args.trainer_python, args.trainer_path),
                  scene_args=shlex.split(args.scene_args), blend_args=shlex.split(args.blend_args),
                  reuse=args.reuse, log=(out / "pie.log").resolve(), nice=args.nice)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "commit": git_commit(), "data": str(args.data), "size": args.size, "seed": args.seed, "kinds": list(kinds),
            "methods": methods, "preset": args.preset, "pie_seed": args.pie_seed,
            "scene_args": shlex.split(args.scene_args), "blend_args": shlex.split(args.blend_args),
            "versions": {"opencv": cv2.__version__, "numpy": np.__version__,
                         "scikit-image": __import__("skimage").__version__}}
    rows: list[dict] = []
    try:
        for photo in photos:
            print(f"\n== {photo.name}", flush=True)
            pw = work / photo.name
            pw.mkdir(parents=True, exist_ok=True)
            truth_png, mask_png = pw / "truth.png", pw / "mask.png"
            Image.fromarray(photo.image).save(truth_png)
            Image.fromarray(np.where(photo.mask, 255, 0).astype(np.uint8)).save(mask_png)
            scene_timing, scene_error = None, None
            if pie is not None:
                try:
                    scene_timing = pie.learn_scene(truth_png.resolve(), mask_png.resolve(), concept_name(photo.name))
                except RuntimeError as e:
                    scene_error = str(e)
                    print(f"  pie learn-scene failed: {e}", flush=True)
            for comp in make_composites([photo], args.seed, kinds, pool):
                results: dict[str, np.ndarray] = {}
                timings: dict[str, object] = {}
                errors: dict[str, str] = {}
                comp_png = pw / f"{comp.kind}-composite.png"
                Image.fromarray(comp.image).save(comp_png)
                for m in methods:
                    t0 = time.perf_counter()
                    if m == "composite":
                        results[m] = comp.image
                    elif m == "lab":
                        results[m] = lab_baseline(comp.image, photo.mask)
                    elif m == "poisson":
                        results[m] = poisson_baseline(comp.image, photo.mask)
                    elif pie is not None:
                        if scene_error:
                            errors[m] = scene_error
                            continue
                        if scene_timing:  # on the photo's first case only
                            timings["learn_scene"], scene_timing = scene_timing, None
                        png = pw / f"{comp.kind}-pie.png"
                        try:
                            timings["blend"] = pie.blend(comp_png.resolve(), mask_png.resolve(),
                                                         concept_name(photo.name), png.resolve(), args.pie_seed)
                            res = np.asarray(Image.open(png).convert("RGB"))
                            if res.shape != photo.image.shape:
                                raise RuntimeError(f"pie blend wrote {res.shape[1::-1]}, not the photo's size")
                            results[m] = res
                        except RuntimeError as e:
                            errors[m] = str(e)
                            print(f"  pie blend failed: {e}", flush=True)
                        continue
                    timings[m] = {"wall_s": round(time.perf_counter() - t0, 3)}
                for m, img in results.items():
                    if m != "composite":
                        Image.fromarray(img).save(pw / f"{comp.kind}-{m}.png")
                sc = {m: score(img, photo.image, photo.mask) for m, img in results.items()}
                for m, img in results.items():  # the truth-free score too, for ranking()
                    sc[m]["outline"] = scores.harmonization(img, photo.mask)
                row = {"case": comp.name, "photo": photo.name, "kind": comp.kind, "params": comp.params,
                       "change": describe(comp), "mask_fraction": float(photo.mask.mean()), "scores": sc,
                       "timings": timings, "errors": errors}
                rows.append(row)
                print(f"  {comp.name}: {row['change']}", flush=True)
                for m, s in sc.items():
                    print(f"    {m:9s} MSE {s['mse']:8.2f}  PSNR {s['psnr']:6.2f}  fMSE {s['fmse']:8.1f}", flush=True)
                panels = [("truth", photo.image, "the original photo")]
                for m in methods:
                    if m in results:
                        s = sc[m]
                        caption = f"MSE {s['mse']:.1f}  PSNR {s['psnr']:.2f}\nfMSE {s['fmse']:.1f}"
                        panels.append((m, results[m], caption))
                    else:
                        panels.append((m + " (failed)", np.full_like(photo.image, 255), errors.get(m, "")[:40]))
                contact_sheet(panels, photo.mask, f"{comp.name}: {row['change']}   ({meta['date']})").save(
                    out / f"sheet-{comp.name}.png")
                write_results(out, meta, rows, methods)  # after every case, so that a long run leaves what it has
    finally:
        if tmp_lib:
            shutil.rmtree(tmp_lib, ignore_errors=True)
    meta["pair_score_agreement"] = agreement(photos, make_composites(photos, args.seed, kinds, pool))
    md = write_results(out, meta, rows, methods)
    print("\n" + md)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {len(rows)} contact sheets in {out}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
