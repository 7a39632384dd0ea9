#!/usr/bin/env python3
"""pie's quality evaluation: naive paste, Poisson blending and pie on scene/subject pairs.

For each pair (a scene photo, a subject photo, a selection rectangle chosen
here) it produces three results and scores each with tests/eval/scores.py:

1. naive paste: the subject cut-out scaled to fit the selection's bounds
   (aspect kept) where pie add places it by default (centred across, standing
   on the selection's bottom, a little above it) and pasted through its mask;
2. Poisson blending: the same cut-out at the same place through OpenCV's
   seamlessClone (NORMAL_CLONE);
3. pie: `pie learn-scene`, `pie learn-subject --mask`, `pie add` with the real
   command line binary (target/release/pie), default presets or --preset quick.

The subject's mask comes from GrabCut (OpenCV), initialised per subject from
a rectangle (and, for the backpack, from its saturated colour); the same mask
goes to `pie learn-subject --mask` and to both baselines, so all three insert
the same cut-out.

Photos: ../shared/data/ (relative to the repository root) when present, else
scikit-image's bundled sample photos (scenes rocket, astronaut, coffee;
subjects chelsea the cat and the coffee cup).

Writes into --out: results.md, results.json, sheet-<pair>.png (scene, selection,
naive, Poisson, pie, labelled, with 2x crops around the selection), and the
inputs/outputs of every method under work/.

Run it with the eval environment's python:
  PY=$(bash build/python-env.sh eval-venv tests/eval/requirements.txt 800 "cv2, skimage, numpy, PIL")
  $PY tests/eval/evaluate.py --preset quick --out /tmp/pie-eval
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "bench"))
import scores  # noqa: E402
from common import machine, pie_env, run_monitored  # noqa: E402  (bench/common.py)

METHODS = ("naive", "poisson", "pie")


# --------------------------------------------------------------------------- pairs


@dataclass
class Subject:
    name: str
    path: Path | None          # None: a scikit-image sample (loaded by `skimage_name`)
    # GrabCut initialisation, fractions of the image: (x, y, w, h)
    rect: tuple[float, float, float, float]
    # Seed GrabCut's foreground with strongly saturated pixels inside `rect` (a colourful subject
    # in front of a grey one, e.g. the backpack worn by a person) instead of the plain rectangle.
    saturated_seed: bool = False
    skimage_name: str | None = None


@dataclass
class Pair:
    name: str
    scene: Path | None
    subject: Subject
    # the selection rectangle in scene pixels: (x, y, w, h)
    selection: tuple[int, int, int, int]
    skimage_scene: str | None = None
    scene_short_side: int | None = None  # downscale a registry photo to about the shared scenes' size
    notes: str = ""


def shared_pairs(data: Path) -> list[Pair]:
    backpack = Subject("backpack", data / "instances/backpack.jpg", (0.30, 0.02, 0.40, 0.72), saturated_seed=True)
    dog = Subject("dog", data / "instances/dog.jpg", (0.02, 0.15, 0.62, 0.80))
    s = data / "scenes"
    return [
        # 282x176: on the pebbles of the lake shore, in front of the water
        Pair("mountains+backpack", s / "mountains.png", backpack, (150, 84, 64, 80)),
        # 249x200: on the green slope at the lower left
        Pair("seascape+dog", s / "seascape.png", dog, (36, 100, 84, 80)),
        # 298x167: among the trees of the lower-left slope
        Pair("forest+dog", s / "forest.png", dog, (150, 88, 80, 70)),
        # 267x187: in the poppy field
        Pair("field_poppies+backpack", s / "field_poppies.png", backpack, (104, 100, 62, 80)),
    ]


def registry_pairs() -> list[Pair]:
    """Without ../shared/data: scikit-image's bundled photos (public-domain / CC0, see skimage/data/README)."""
    cat = Subject("chelsea", None, (0.12, 0.02, 0.76, 0.96), skimage_name="chelsea")
    cup = Subject("coffee-cup", None, (0.14, 0.02, 0.84, 0.88), skimage_name="coffee")
    return [
        # rocket is 640x427, used at short side 180 (270x180): the launch pad's ground, left
        Pair("rocket+chelsea", None, cat, (20, 110, 80, 60), skimage_scene="rocket", scene_short_side=180),
        Pair("rocket+coffee-cup", None, cup, (170, 110, 80, 60), skimage_scene="rocket", scene_short_side=180),
        # astronaut is 512x512, used at 180x180: the flag and wall at the left
        Pair("astronaut+coffee-cup", None, cup, (4, 100, 70, 50), skimage_scene="astronaut", scene_short_side=180),
        # coffee is 600x400, used at 270x180: on the table, left of the cup
        Pair("coffee+chelsea", None, cat, (8, 16, 70, 50), skimage_scene="coffee", scene_short_side=180),
    ]


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def skimage_photo(name: str | None, short_side: int | None = None) -> np.ndarray:
    """One of scikit-image's sample photographs (a pair without a file of its own names one)."""
    import skimage.data
    if name is None:
        raise ValueError("the pair names neither a file nor a scikit-image photograph")
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = np.ascontiguousarray(img[..., :3])
    if short_side:
        h, w = img.shape[:2]
        f = short_side / min(h, w)
        img = np.asarray(Image.fromarray(img).resize((round(w * f), round(h * f)), Image.Resampling.LANCZOS))
    return img


# --------------------------------------------------------------------------- masks and baselines


def subject_mask(img: np.ndarray, subj: Subject, iterations: int = 5, seed: int = 0) -> np.ndarray:
    """GrabCut from OpenCV: 255 = subject. Largest connected component, holes filled."""
    h, w = img.shape[:2]
    fx, fy, fw, fh = subj.rect
    x, y, rw, rh = int(fx * w), int(fy * h), int(fw * w), int(fh * h)
    bgr = np.ascontiguousarray(img[..., ::-1])
    m = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    if subj.saturated_seed:
        m[:] = cv2.GC_BGD
        m[y:y + rh, x:x + rw] = cv2.GC_PR_BGD
        sat = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[..., 1]
        inside = np.zeros((h, w), bool)
        inside[y:y + rh, x:x + rw] = True
        m[inside & (sat > 110)] = cv2.GC_PR_FGD
        m[inside & (sat > 160)] = cv2.GC_FGD
        cv2.grabCut(bgr, m, (0, 0, 0, 0), bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)   # rect unused here
    else:
        cv2.grabCut(bgr, m, (x, y, rw, rh), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    fg = np.where((m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg)
    if n <= 1:
        raise RuntimeError(f"GrabCut found no subject in {subj.name}")
    fg = np.where(lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), 255, 0).astype(np.uint8)
    # fill holes: everything not reachable from the border through background
    flood = fg.copy()
    ff = np.zeros((h + 2, w + 2), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 255)
    fg = fg | (255 - flood)
    return fg


def rect_mask(shape: tuple[int, int], rect: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = rect
    m = np.zeros(shape, np.uint8)
    m[y:y + h, x:x + w] = 255
    return m


def place_subject(subject: np.ndarray, mask: np.ndarray, selection: tuple[int, int, int, int],
                  scene_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out (subject cropped to its mask's bounds) scaled to fit the selection's bounds, aspect kept,
    where `pie add` puts it by default: inside the selection's faded edge (short side / 12, clamped to 1..12 px,
    for these hard-edged rectangles), centred across, standing on the bottom with 5 % of the height left below
    for the shadow, so that all three methods insert the same cut-out at the same place; returns (colour,
    alpha in [0, 1]) at the scene's size. Premultiplied resampling (INTER_AREA when shrinking), so the
    colour under alpha 0 does not bleed into the edge."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = mask[y0:y1, x0:x1].astype(np.float32) / 255.0
    rgb = subject[y0:y1, x0:x1].astype(np.float32) / 255.0
    sx, sy, sw, sh = selection
    edge = min(12, max(1, min(sw, sh) // 12))
    sx, sy, sw, sh = sx + edge, sy + edge, sw - 2 * edge, sh - 2 * edge - math.floor(0.05 * sh + 0.5)
    bw, bh = x1 - x0, y1 - y0
    fit = min(sw / bw, sh / bh)
    pw, ph = max(1, round(bw * fit)), max(1, round(bh * fit))
    interp = cv2.INTER_AREA if fit < 1 else cv2.INTER_LINEAR
    pre = cv2.resize(rgb * a[..., None], (pw, ph), interpolation=interp)
    ra = cv2.resize(a, (pw, ph), interpolation=interp)
    col = np.where(ra[..., None] > 1e-6, pre / np.maximum(ra[..., None], 1e-6), 0).clip(0, 1)
    ox, oy = math.floor(sx + (sw - pw) / 2 + 0.5), sy + sh - ph   # rounding half up, as Rust's round()
    H, W = scene_shape
    colour = np.zeros((H, W, 3), np.float32)
    alpha = np.zeros((H, W), np.float32)
    colour[oy:oy + ph, ox:ox + pw] = col
    alpha[oy:oy + ph, ox:ox + pw] = ra.clip(0, 1)
    alpha *= rect_mask((H, W), selection) > 0
    return colour, alpha


def naive_paste(scene: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """result = alpha * subject + (1 - alpha) * scene (alpha: the cut-out's mask, resampled)."""
    s = scene.astype(np.float32) / 255.0
    out = alpha[..., None] * colour + (1 - alpha[..., None]) * s
    return (out * 255 + 0.5).clip(0, 255).astype(np.uint8)


def poisson_blend(scene: np.ndarray, colour: np.ndarray, placement: np.ndarray, mode: str = "normal") -> np.ndarray:
    """OpenCV seamlessClone of the placed cut-out into the scene, through the placement mask."""
    src = (colour * 255 + 0.5).clip(0, 255).astype(np.uint8)
    mask = np.where(placement > 0, 255, 0).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    x, y, w, h = xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
    # OpenCV puts the mask's bounding box at center - (w/2, h/2) (integer division): back where it was.
    center = (int(x + w // 2), int(y + h // 2))
    flag = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}[mode]
    out = cv2.seamlessClone(np.ascontiguousarray(src[..., ::-1]), np.ascontiguousarray(scene[..., ::-1]),
                            mask, center, flag)
    return np.ascontiguousarray(out[..., ::-1])


# --------------------------------------------------------------------------- pie


@dataclass
class Pie:
    binary: Path
    library: Path
    preset: str
    env: dict[str, str]
    add_args: list[str] = field(default_factory=list)
    scene_args: list[str] = field(default_factory=list)
    subject_args: list[str] = field(default_factory=list)
    reuse: bool = False
    log: Path | None = None
    nice: int = 0

    def _run(self, args: list[str], what: str) -> dict:
        """Runs `pie --json ARGS`; returns wall time and the peak memory of pie and its trainer."""
        cmd = [str(self.binary), "--json", *args]
        if self.nice:
            cmd = ["nice", "-n", str(self.nice), *cmd]
        print(f"  $ {shlex.join(cmd)}", flush=True)
        with open(self.log or os.devnull, "a", buffering=1) as log:  # line-buffered: tail -f works
            log.write(f"\n$ {shlex.join(cmd)}\n")
            log.flush()
            r = run_monitored(cmd, env=self.env, log=log)
        if r.rc != 0:
            raise RuntimeError(f"{what} failed (exit {r.rc}):\n{r.stderr[-3000:]}")
        print(f"    {r.wall_s:.1f} s, peak {r.peak_rss_mb:.0f} MB", flush=True)
        return {"wall_s": round(r.wall_s, 2), "peak_rss_mb": round(r.peak_rss_mb, 1),
                "phases": [{"phase": p, "start_s": round(t, 1), "peak_rss_mb": round(m, 1)} for p, t, m in r.phases]}

    def _quick(self) -> list[str]:
        return ["--quick"] if self.preset == "quick" else []

    def has(self, name: str) -> bool:
        return (self.library / name / "bundle.json").is_file()

    def learn_scene(self, image: Path, name: str) -> dict | None:
        if self.reuse and self.has(name):
            print(f"  (reusing the concept {name})")
            return None
        return self._run(["learn-scene", str(image), "--name", name, "--library", str(self.library), "--force",
                          *self._quick(), *self.scene_args], f"pie learn-scene {name}")

    def learn_subject(self, image: Path, mask: Path, scene: str, name: str) -> dict | None:
        if self.reuse and self.has(name):
            print(f"  (reusing the concept {name})")
            return None
        return self._run(["learn-subject", str(image), "--scene", scene, "--mask", str(mask), "--name", name,
                          "--library", str(self.library), "--force", *self._quick(), *self.subject_args],
                         f"pie learn-subject {name}")

    def add(self, image: Path, selection: Path, concept: str, out: Path, seed: int) -> dict:
        return self._run(["add", str(image), "--selection", str(selection), "--concept", concept,
                          "--library", str(self.library), "--seed", str(seed), "--out", str(out), *self.add_args],
                         f"pie add {concept}")


# --------------------------------------------------------------------------- sheets


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def outline(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 230, 0)) -> np.ndarray:
    out = img.copy()
    band = scores.boundary_band(mask, 1) & (mask == 0)
    out[band] = colour
    return out


def contact_sheet(pair: str, panels: list[tuple[str, np.ndarray, str]], selection: tuple[int, int, int, int],
                  title: str, zoom: int = 2) -> Image.Image:
    """Row 1: the panels at full size; row 2: crops around the selection at `zoom`x (nearest neighbour)."""
    font, small = _font(14), _font(12)
    H, W = panels[0][1].shape[:2]
    x, y, w, h = selection
    m = max(8, max(w, h) // 3)
    cx0, cy0, cx1, cy1 = max(0, x - m), max(0, y - m), min(W, x + w + m), min(H, y + h + m)
    cw, ch = (cx1 - cx0) * zoom, (cy1 - cy0) * zoom
    colw = max(W, cw) + 8
    label_h, score_h, title_h = 20, 34, 24
    sheet = Image.new("RGB", (colw * len(panels) + 8, title_h + label_h + H + 8 + ch + score_h + 8), "white")
    d = ImageDraw.Draw(sheet)
    d.text((8, 4), title, fill="black", font=font)
    for i, (label, img, caption) in enumerate(panels):
        x0 = 8 + i * colw
        d.text((x0, title_h), label, fill="black", font=font)
        sheet.paste(Image.fromarray(img), (x0, title_h + label_h))
        crop = Image.fromarray(img[cy0:cy1, cx0:cx1]).resize((cw, ch), Image.Resampling.NEAREST)
        sheet.paste(crop, (x0, title_h + label_h + H + 8))
        for j, line in enumerate(caption.split("\n")):
            d.text((x0, title_h + label_h + H + 8 + ch + 2 + 15 * j), line, fill="black", font=small)
    return sheet


# --------------------------------------------------------------------------- main


def score_all(result: np.ndarray, scene: np.ndarray, sel: np.ndarray, reference: np.ndarray,
              placement: np.ndarray, band: int | None, seam_width: int) -> dict[str, float]:
    return {
        "preservation": scores.background_preservation(result, scene, sel),
        "seam": scores.seam(result, scene, sel, width=seam_width),
        # at the subject's outline (where the cut-out lands), not the selection's
        "harmonization": scores.harmonization(result, placement, band=band),
        "fidelity": scores.subject_fidelity(result, reference, placement),
    }


def scene_as_is(scene: np.ndarray, sel: np.ndarray, placement: np.ndarray, seam_width: int,
                band: int | None) -> dict[str, float]:
    """Seam and harmonization of the untouched scene: what the scene itself shows across the selection's edge
    and across the subject's outline (the scene's own steps there; about 1 where it is uniform)."""
    return {"seam": scores.seam(scene, scene, sel, width=seam_width),
            "harmonization": scores.harmonization(scene, placement, band=band)}


def git_commit() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def fmt(v: float | int | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def markdown_table(rows: list[dict], meta: dict) -> str:
    out = [
        f"Preset `{meta['preset']}`, {meta['date']}, {meta['machine']}; pie at `{meta['commit']}`; "
        f"`pie add` {' '.join(meta['add_args']) or '(engine defaults)'}, seed {meta['seed']}.",
        "",
        "| pair | method | background preservation (= 0) | seam (lower) | harmonization (lower) "
        "| subject fidelity (higher) | fidelity / naive's |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        nf = r["scores"]["naive"]["fidelity"]
        for m in METHODS:
            s = r["scores"].get(m)
            if s is None:
                out.append(f"| {r['pair']} | {m} | — | — | — | — | — |")
                continue
            rel = s["fidelity"] / nf if nf else None
            out.append(f"| {r['pair']} | {m} | {s['preservation']} | {fmt(s['seam'], 2)} | "
                       f"{fmt(s['harmonization'], 2)} | {fmt(s['fidelity'])} | {fmt(rel, 2)} |")
        ref = r.get("scene_as_is")
        if ref:
            out.append(f"| {r['pair']} | *scene as is (reference)* | 0 | {fmt(ref['seam'], 2)} | "
                       f"{fmt(ref['harmonization'], 2)} | — | — |")
    if any(r.get("scene_as_is") for r in rows):
        out += ["", "*Scene as is*: the photograph without any insertion, scored the same way: the seam and "
                    "harmonization that come from the scene itself around the selection (not a method)."]
    out += ["", "*Harmonization*: the median, along the subject's outline (where the cut-out lands), of the "
                "low-frequency Lab step across the outline over the steps just inside and outside it (+1); the scene "
                "as is shows what no step of its own scores (scores.harmonization, checked against ground truth by "
                "tests/eval/harmonization.py). A subject washed out into the scene scores low too: read it with "
                "subject fidelity."]
    out += ["", "Acceptance (pie beats naive and Poisson on seam and harmonization, preservation 0, "
                "fidelity at least 0.6 of naive's):", "",
            "| pair | seam | harmonization | preservation | fidelity ≥ 0.6 × naive |", "|---|---|---|---|---|"]
    for r in rows:
        a = r.get("acceptance")
        if not a:
            out.append(f"| {r['pair']} | — | — | — | — |")
            continue
        out.append("| {} | {} | {} | {} | {} |".format(r["pair"], *(a[k]["text"] for k in
                                                                   ("seam", "harmonization", "preservation",
                                                                    "fidelity"))))
    timed = [r for r in rows if r.get("timings", {}).get("add")]
    if timed:
        out += ["", "pie's time and peak memory (pie + trainer, summed RSS) per pair:", "",
                "| pair | Stage I (learn-scene) | Stage II (learn-subject) | Add |", "|---|---|---|---|"]
        for r in timed:
            cells = []
            for k in ("learn_scene", "learn_subject", "add"):
                t = r["timings"].get(k)
                cells.append(f"{t['wall_s']:.1f} s, {t['peak_rss_mb']:.0f} MB" if t else "(reused)")
            out.append(f"| {r['pair']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def acceptance(sc: dict[str, dict[str, float]]) -> dict[str, dict]:
    p, n, q = sc["pie"], sc["naive"], sc["poisson"]
    res = {}
    for k in ("seam", "harmonization"):
        best = min(n[k], q[k])
        ok = p[k] < best
        res[k] = {"pass": ok, "pie": p[k], "best_baseline": best,
                  "text": f"{'pass' if ok else 'FAIL'}: {p[k]:.3f} vs {best:.3f} ({p[k] / best:.3f}x)"
                  if best else f"{'pass' if ok else 'FAIL'}"}
    ok = p["preservation"] == 0
    res["preservation"] = {"pass": ok, "text": f"{'pass' if ok else 'FAIL'}: {p['preservation']}"}
    ratio = p["fidelity"] / n["fidelity"] if n["fidelity"] else 0.0
    ok = ratio >= 0.6
    res["fidelity"] = {"pass": ok, "ratio": ratio, "text": f"{'pass' if ok else 'FAIL'}: {ratio:.2f}"}
    return res


def rescore(out: Path, band: int | None, seam_width: int) -> int:
    """Scores the images of an earlier run again (e.g. after a change to scores.py), keeping its metadata."""
    data = json.loads((out / "results.json").read_text())
    meta, rows = data["meta"], data["pairs"]
    meta.pop("rim", None)  # the harmonization score of runs before the outline score
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta.update(band=band, seam_width=seam_width, rescored=now)
    for row in rows:
        pw = out / "work" / row["pair"]
        scene, subj = load_rgb(pw / "scene.png"), load_rgb(pw / "subject.png")
        smask = np.asarray(Image.open(pw / "subject-mask.png").convert("L"))
        sel = np.asarray(Image.open(pw / "selection.png").convert("L"))
        colour, alpha = place_subject(subj, smask, tuple(row["selection"]), scene.shape[:2])
        placement = (alpha >= 0.5).astype(np.uint8) * 255
        reference = naive_paste(scene, colour, alpha)
        row["scores"] = {m: score_all(load_rgb(pw / f"{m}.png"), scene, sel, reference, placement, band, seam_width)
                         for m in METHODS if (pw / f"{m}.png").is_file()}
        row["scene_as_is"] = scene_as_is(scene, sel, placement, seam_width, band)
        row.pop("acceptance", None)
        if all(m in row["scores"] for m in METHODS):
            row["acceptance"] = acceptance(row["scores"])
    print(write_results(out, meta, rows))
    return 0


def write_results(out: Path, meta: dict, rows: list[dict]) -> str:
    (out / "results.json").write_text(json.dumps({"meta": meta, "pairs": rows}, indent=2) + "\n")
    md = markdown_table(rows, meta) if all("naive" in r["scores"] for r in rows) else ""
    (out / "results.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out",
                    help="output folder (default tests/eval/out, git-ignored)")
    ap.add_argument("--preset", choices=("default", "quick"), default="default",
                    help="pie's training preset for both stages (default: default)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data",
                    help="the shared test photographs (default: ../shared/data from the repository root)")
    ap.add_argument("--registry-photos", action="store_true",
                    help="use scikit-image's bundled photos even when --data exists")
    ap.add_argument("--pairs", default="", help="comma-separated pair names to run (default: all four)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of naive,poisson,pie")
    ap.add_argument("--pie", type=Path, default=ROOT / "target/release/pie", help="the pie binary")
    ap.add_argument("--library", type=Path, default=None,
                    help="concept library for pie (default: a temporary folder, removed at the end)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep concepts already in --library instead of training them again")
    ap.add_argument("--seed", type=int, default=0, help="seed for pie add (default 0)")
    ap.add_argument("--add-args", default="",
                    help="further `pie add` arguments, e.g. '--steps 50 --strength 0.7' (default: engine defaults)")
    ap.add_argument("--scene-args", default="", help="further `pie learn-scene` arguments")
    ap.add_argument("--subject-args", default="", help="further `pie learn-subject` arguments")
    ap.add_argument("--ort-dylib", default=None,
                    help="ONNX Runtime library (default: $ORT_DYLIB_PATH, else `bash build/onnxruntime.sh cpu`)")
    ap.add_argument("--trainer-python", default=None,
                    help="the trainer's python (default: $PIE_TRAINER_PYTHON, else `bash build/trainer-env.sh`)")
    ap.add_argument("--trainer-path", type=Path, default=ROOT / "trainer", help="PIE_TRAINER_PATH (default trainer/)")
    ap.add_argument("--nice", type=int, default=10, help="run pie under `nice -n N` (0: not; default 10)")
    ap.add_argument("--poisson-mode", choices=("normal", "mixed"), default="normal",
                    help="seamlessClone flag (default normal: NORMAL_CLONE)")
    ap.add_argument("--band", type=int, default=None,
                    help="band width either side of the subject's outline for harmonization, px (default: "
                         "scores.outline_scale, 2 px below 425 px, 3 px at 512)")
    ap.add_argument("--seam-width", type=int, default=1, help="half-width of the seam band, px (default 1)")
    ap.add_argument("--grabcut-iterations", type=int, default=5, help="GrabCut iterations (default 5)")
    ap.add_argument("--zoom", type=int, default=2, help="magnification of the crops in the contact sheets (default 2)")
    ap.add_argument("--rescore", action="store_true",
                    help="run nothing: score again the images an earlier run left in --out (its work/ folder and "
                         "results.json), and write results.md/json anew")
    args = ap.parse_args(argv)
    if args.rescore:
        return rescore(args.out, args.band, args.seam_width)

    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m}")
    use_shared = args.data.is_dir() and not args.registry_photos
    pairs = shared_pairs(args.data) if use_shared else registry_pairs()
    if args.pairs:
        want = args.pairs.split(",")
        unknown = set(want) - {p.name for p in pairs}
        if unknown:
            ap.error(f"unknown pairs {sorted(unknown)}; known: {[p.name for p in pairs]}")
        pairs = [p for p in pairs if p.name in want]
    source = (f"shared photographs from {args.data}" if use_shared
              else "scikit-image's bundled sample photos (rocket, astronaut, coffee, chelsea)")
    print(f"pairs: {', '.join(p.name for p in pairs)} ({source})", flush=True)

    out = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    tmp_lib = None
    pie = None
    if "pie" in methods:
        if not args.pie.is_file():
            ap.error(f"no pie binary at {args.pie}: cargo build --release -p pie-engine (or --methods naive,poisson)")
        library = args.library
        if library is None:
            tmp_lib = tempfile.mkdtemp(prefix="pie-eval-lib.")
            library = Path(tmp_lib)
        library.mkdir(parents=True, exist_ok=True)
        env = pie_env(library.resolve(), args.ort_dylib, args.trainer_python, args.trainer_path)
        pie = Pie(args.pie.resolve(), library.resolve(), args.preset, env,
                  add_args=shlex.split(args.add_args), scene_args=shlex.split(args.scene_args),
                  subject_args=shlex.split(args.subject_args), reuse=args.reuse, log=(out / "pie.log").resolve(),
                  nice=args.nice)

    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "preset": args.preset,
        "machine": machine(),
        "commit": git_commit(),
        "photos": source,
        "seed": args.seed,
        "add_args": shlex.split(args.add_args),
        "methods": methods,
        "band": args.band,
        "seam_width": args.seam_width,
        "poisson_mode": args.poisson_mode,
        "versions": {"opencv": cv2.__version__, "numpy": np.__version__,
                     "scikit-image": __import__("skimage").__version__},
    }
    rows = []
    try:
        for pair in pairs:
            print(f"\n== {pair.name}", flush=True)
            pw = work / pair.name
            pw.mkdir(parents=True, exist_ok=True)
            scene = (load_rgb(pair.scene) if pair.scene else skimage_photo(pair.skimage_scene, pair.scene_short_side))
            subj = (load_rgb(pair.subject.path) if pair.subject.path else skimage_photo(pair.subject.skimage_name))
            H, W = scene.shape[:2]
            x, y, w, h = pair.selection
            if not (0 <= x and 0 <= y and x + w <= W and y + h <= H):
                raise ValueError(f"{pair.name}: selection {pair.selection} leaves the {W}x{H} scene")
            smask = subject_mask(subj, pair.subject, args.grabcut_iterations)
            sel = rect_mask((H, W), pair.selection)
            # Inputs as files: the same ones pie reads.
            scene_png, subj_png = pw / "scene.png", pw / "subject.png"
            mask_png, sel_png = pw / "subject-mask.png", pw / "selection.png"
            Image.fromarray(scene).save(scene_png)
            Image.fromarray(subj).save(subj_png)
            Image.fromarray(smask).save(mask_png)
            Image.fromarray(sel).save(sel_png)
            colour, alpha = place_subject(subj, smask, pair.selection, (H, W))
            placement = (alpha >= 0.5).astype(np.uint8) * 255
            reference = naive_paste(scene, colour, alpha)
            results: dict[str, np.ndarray] = {}
            timings: dict[str, object] = {}
            errors: dict[str, str] = {}
            if "naive" in methods:
                results["naive"] = reference
            if "poisson" in methods:
                t0 = time.perf_counter()
                results["poisson"] = poisson_blend(scene, colour, placement, args.poisson_mode)
                timings["poisson"] = {"wall_s": round(time.perf_counter() - t0, 4)}
            if pie is not None:
                stem = pair.name.replace("+", "-").replace("_", "-")
                scene_name = f"eval-{pair.scene.stem if pair.scene else pair.skimage_scene}".replace("_", "-")
                subj_name = f"eval-{stem}"
                try:
                    timings["learn_scene"] = pie.learn_scene(scene_png.resolve(), scene_name)
                    timings["learn_subject"] = pie.learn_subject(subj_png.resolve(), mask_png.resolve(),
                                                                    scene_name, subj_name)
                    pie_png = pw / "pie.png"
                    timings["add"] = pie.add(scene_png.resolve(), sel_png.resolve(), subj_name, pie_png.resolve(),
                                               args.seed)
                    results["pie"] = load_rgb(pie_png)
                except RuntimeError as e:
                    errors["pie"] = str(e)
                    print(f"  pie failed: {e}", flush=True)
            for m, img in results.items():
                Image.fromarray(img).save(pw / f"{m}.png")
            sc = {m: score_all(img, scene, sel, reference, placement, args.band, args.seam_width)
                  for m, img in results.items()}
            row = {"pair": pair.name, "selection": list(pair.selection), "scene_size": [W, H],
                   "subject_mask_fraction": float((smask > 0).mean()), "scores": sc, "timings": timings,
                   "errors": errors, "scene_as_is": scene_as_is(scene, sel, placement, args.seam_width, args.band)}
            if all(m in sc for m in METHODS):
                row["acceptance"] = acceptance(sc)
            rows.append(row)
            for m, s in sc.items():
                print(f"  {m:8s} preservation {s['preservation']:3d}  seam {s['seam']:6.2f}  "
                      f"harmonization {s['harmonization']:6.2f}  fidelity {s['fidelity']:.3f}", flush=True)
            panels = [("scene", scene, f"{W}x{H}"),
                      ("selection + cut-out", outline(outline(scene, sel), placement, (0, 200, 255)),
                       f"selection {w}x{h} at ({x},{y})")]
            for m, label in (("naive", "naive paste"), ("poisson", "Poisson (seamlessClone)"), ("pie", "pie")):
                if m in results:
                    s = sc[m]
                    panels.append((label, results[m],
                                   f"seam {s['seam']:.2f}  harm. {s['harmonization']:.2f}\n"
                                   f"fidelity {s['fidelity']:.2f}  bg diff {s['preservation']}"))
                elif m in methods:
                    panels.append((label + " (failed)", np.full_like(scene, 255), errors.get(m, "")[:40]))
            title = (f"{pair.name}   (preset {args.preset}, seed {args.seed}, {meta['date']})")
            contact_sheet(pair.name, panels, pair.selection, title, args.zoom).save(out / f"sheet-{pair.name}.png")
            write_results(out, meta, rows)  # after every pair, so that a long run leaves what it has
    finally:
        if tmp_lib:
            shutil.rmtree(tmp_lib, ignore_errors=True)

    md = write_results(out, meta, rows)
    print("\n" + md)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {len(rows)} contact sheets in {out}")
    failed = [r["pair"] for r in rows if r["errors"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
