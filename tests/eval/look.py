#!/usr/bin/env python3
"""Does the added subject carry the scene's sharpness and grain? Measured on pie's results.

For each result, the subject's inside (where the cut-out lands, eroded past its
outline) is measured on the result, and the scene around it (a ring from 3 px
outside the subject out to a quarter of its shorter side, measured on the
scene photo itself, before anything was added) on the scene:

- noise: scores.noise_level, the grain as a standard deviation of luminance;
- blur: scores.edge_blur, the blur of edges in px (Zhuo and Sim's re-blur ratio);
- outline: the 90th percentile of the luminance gradient along the subject's
  outline on the result, against the same percentile over the scene ring's
  own edges: an outline softer than the photo's edges reads lower.

The goal (issue: photographed there): the subject's blur and noise within 20 %
of the scene's around it. The naive paste's figures are printed beside pie's,
so the change pie makes can be read.

With --shadows, the contact shadow too: how much darker the ground is under
an object's base, at fractions of its height below it (linear luminance), in
real photographs (the harmonization photos, against the ground further down)
and in pie's results on the pairs (against the scene photo itself).

Two sources:
- `--eval DIR`: an evaluate.py output folder (its work/PAIR/ images; the
  placement is evaluate.py's mirror of pie's);
- `--large PHOTO` (repeatable): `pie add` on a large photo with a square
  selection of --selection-px, using a subject concept from --library
  (one of evaluate.py's, e.g. eval-seascape-dog) and that pair's cut-out for
  the placement; Add's wall time and peak memory are printed too.

  PY=$(ls ~/.cache/pie/eval-venv-*/bin/python)
  $PY tests/eval/look.py --eval /tmp/pie-eval
  $PY tests/eval/look.py --eval /tmp/pie-eval --library /tmp/evlib \
      --large ../shared/data/large/lawn-sloth-2048.jpg --large ../shared/data/large/rock-candle-2048.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import evaluate  # noqa: E402
import harmonization  # noqa: E402
import scores  # noqa: E402

GOAL = 0.2


def regions(placement: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside, outline, ring) of a placement mask: the subject's inside 3 px in from its outline, the outline
    pixels, and the scene around it (3 px out to a quarter of the subject's shorter side)."""
    m = placement > 0
    ys, xs = np.nonzero(m)
    short = min(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    d_out = ndimage.distance_transform_edt(~m)
    inside = ndimage.binary_erosion(m, iterations=3)
    outline = m & ~ndimage.binary_erosion(m, border_value=1)
    ring = (d_out >= 3) & (d_out <= max(6.0, short / 4))
    return inside, outline, ring


def gradient_p90(img: np.ndarray, where: np.ndarray) -> float:
    lum = scores.luminance(img).astype(np.float64) / 255.0
    g = np.hypot(ndimage.sobel(lum, 0), ndimage.sobel(lum, 1)) / 8.0
    return float(np.percentile(g[where], 90)) if where.any() else float("nan")


def measure(result: np.ndarray, scene: np.ndarray, placement: np.ndarray) -> dict[str, float]:
    inside, outline, ring = regions(placement)
    edges_of_ring = ring & (np.hypot(*np.gradient(scores.luminance(scene).astype(np.float64))) > 4)
    return {
        "noise": scores.noise_level(result, inside),
        "scene_noise": scores.noise_level(scene, ring),
        "blur": scores.edge_blur(result, inside),
        "scene_blur": scores.edge_blur(scene, ring),
        "outline_p90": gradient_p90(result, outline),
        "scene_edges_p90": gradient_p90(scene, edges_of_ring),
    }


FRACTIONS = (0.01, 0.03, 0.05, 0.08, 0.12, 0.2)
REFERENCE = 0.4


def linear_luminance(img: np.ndarray) -> np.ndarray:
    return harmonization.srgb_to_linear(img.astype(np.float64) / 255.0) @ np.array([0.2126, 0.7152, 0.0722])


def under_base(mask: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs): for each column of the object's lower part (its lowest pixel within a tenth of its height of
    the bottom), the pixel `frac` of its height below that column's lowest pixel (inside the image)."""
    ys, xs = np.nonzero(mask)
    height = ys.max() - ys.min() + 1
    out_y, out_x = [], []
    for x in range(xs.min(), xs.max() + 1):
        col = np.nonzero(mask[:, x])[0]
        if col.size and ys.max() - col.max() <= 0.1 * height:
            y = int(col.max() + 1 + frac * height)
            if y < mask.shape[0]:
                out_y.append(y)
                out_x.append(x)
    return np.array(out_y, int), np.array(out_x, int)


def real_shadow(photo: np.ndarray, mask: np.ndarray) -> list[float]:
    """The ground's luminance under the object at each of FRACTIONS over its luminance at REFERENCE below."""
    lum = linear_luminance(photo)
    ry, rx = under_base(mask, REFERENCE)
    ref = np.median(lum[ry, rx]) if ry.size else float("nan")
    return [float(np.median(lum[under_base(mask, f)]) / ref) for f in FRACTIONS]


def pie_shadow(result: np.ndarray, scene: np.ndarray, placement: np.ndarray) -> list[float]:
    """The result's luminance under the subject over the scene's at the same pixels, at each of FRACTIONS."""
    a, b = linear_luminance(result), linear_luminance(scene)
    return [float(np.median(a[under_base(placement, f)] / np.maximum(b[under_base(placement, f)], 1e-4)))
            for f in FRACTIONS]


def eval_pairs(out: Path) -> list[tuple[str, Path, np.ndarray, np.ndarray]]:
    """(pair, its work folder, scene, placement) for each pair of an evaluate.py output folder; the placement
    is evaluate.py's mirror of where pie puts the cut-out."""
    pairs = []
    for pair in json.loads((out / "results.json").read_text())["pairs"]:
        pw = out / "work" / pair["pair"]
        scene = evaluate.load_rgb(pw / "scene.png")
        subj = evaluate.load_rgb(pw / "subject.png")
        smask = np.asarray(Image.open(pw / "subject-mask.png").convert("L"))
        _, alpha = evaluate.place_subject(subj, smask, tuple(pair["selection"]), scene.shape[:2])
        pairs.append((pair["pair"], pw, scene, alpha >= 0.5))
    return pairs


def shadows(eval_out: Path, data: Path) -> str:
    lines = ["| ground under the base, at this fraction of the height below | "
             + " | ".join(f"{f}" for f in FRACTIONS) + " |", "|---|" + "---:|" * len(FRACTIONS)]
    real = []
    for m in sorted(data.glob("*_mask.png")):
        photo = evaluate.load_rgb(m.with_name(m.name.replace("_mask", "")))
        real.append(real_shadow(photo, np.asarray(Image.open(m).convert("L")) > 127))
    lines.append(f"| real photographs (median of {len(real)}) | "
                 + " | ".join(f"{v:.2f}" for v in np.median(real, axis=0)) + " |")
    ours = [pie_shadow(evaluate.load_rgb(pw / "pie.png"), scene, placement)
            for _, pw, scene, placement in eval_pairs(eval_out)]
    lines.append(f"| pie's results on the pairs (median of {len(ours)}) | "
                 + " | ".join(f"{v:.2f}" for v in np.median(ours, axis=0)) + " |")
    return "\n".join(lines)


def off(v: float, ref: float) -> float:
    return abs(v - ref) / ref if ref > 0 else float("nan")


def row(name: str, method: str, m: dict[str, float]) -> str:
    n, b = off(m["noise"], m["scene_noise"]), off(m["blur"], m["scene_blur"])
    ok = lambda x: "pass" if x <= GOAL else "FAIL"  # noqa: E731
    return (f"| {name} | {method} | {255 * m['noise']:.2f} / {255 * m['scene_noise']:.2f} ({100 * n:.0f} %, {ok(n)})"
            f" | {m['blur']:.2f} / {m['scene_blur']:.2f} ({100 * b:.0f} %, {ok(b)})"
            f" | {m['outline_p90']:.3f} / {m['scene_edges_p90']:.3f} |")


def from_eval(out: Path) -> list[tuple[str, str, dict[str, float]]]:
    return [(name, method, measure(evaluate.load_rgb(pw / f"{method}.png"), scene, placement))
            for name, pw, scene, placement in eval_pairs(out) for method in ("naive", "pie")]


def from_large(photo: Path, eval_out: Path, library: Path, concept: str, pair: str, size: int,
               pie: Path) -> tuple[list[tuple[str, str, dict[str, float]]], str]:
    scene = evaluate.load_rgb(photo)
    h, w = scene.shape[:2]
    side = min(size, h, w)
    # Centred across, in the lower half: where something put on the ground would stand.
    sel = (int((w - side) // 2), int(h - side - h // 16), int(side), int(side))
    pw = eval_out / "work" / pair
    subj = evaluate.load_rgb(pw / "subject.png")
    smask = np.asarray(Image.open(pw / "subject-mask.png").convert("L"))
    colour, alpha = evaluate.place_subject(subj, smask, sel, (h, w))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        Image.fromarray(evaluate.rect_mask((h, w), sel)).save(t / "selection.png")
        lib = library.resolve()
        runner = evaluate.Pie(pie.resolve(), lib, "quick", evaluate.pie_env(lib, None, None, evaluate.ROOT / "trainer"),
                              log=t / "pie.log")
        timing = runner.add(photo.resolve(), (t / "selection.png").resolve(), concept, (t / "pie.png").resolve(), 0)
        result = evaluate.load_rgb(t / "pie.png")
    naive = evaluate.naive_paste(scene, colour, alpha)
    placement = alpha >= 0.5
    name = f"{photo.name} ({side} px selection)"
    rows = [(name, "naive", measure(naive, scene, placement)), (name, "pie", measure(result, scene, placement))]
    cost = f"{name}: Add {timing['wall_s']:.1f} s, peak memory {timing['peak_rss_mb']:.0f} MB (pie, summed RSS)"
    return rows, cost


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", type=Path, required=True, help="an evaluate.py output folder")
    ap.add_argument("--large", type=Path, action="append", default=[], help="a large photo to add the subject to")
    ap.add_argument("--library", type=Path, help="the library with evaluate.py's concepts (for --large)")
    ap.add_argument("--pair", default="seascape+dog", help="whose subject concept and cut-out --large uses")
    ap.add_argument("--concept", default="eval-seascape-dog", help="the subject concept for --large")
    ap.add_argument("--selection-px", type=int, default=800, help="side of --large's square selection")
    ap.add_argument("--pie", type=Path, default=evaluate.ROOT / "target/release/pie")
    ap.add_argument("--shadows", action="store_true", help="also the contact shadow against real photographs'")
    ap.add_argument("--data", type=Path, default=evaluate.ROOT.parent / "shared/data/harmonization",
                    help="photos of objects with their masks (NAME.png, NAME_mask.png) for --shadows")
    args = ap.parse_args(argv)
    rows = from_eval(args.eval)
    costs = []
    for photo in args.large:
        if args.library is None:
            ap.error("--large needs --library")
        r, c = from_large(photo, args.eval, args.library, args.concept, args.pair, args.selection_px, args.pie)
        rows += r
        costs.append(c)
    print("| result | method | noise ×255: subject / scene (off by) | blur px: subject / scene (off by) "
          "| outline gradient p90 / scene edges' |")
    print("|---|---|---|---|---|")
    for name, method, m in rows:
        print(row(name, method, m))
    for c in costs:
        print(c)
    if args.shadows:
        print()
        print(shadows(args.eval, args.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
