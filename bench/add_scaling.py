#!/usr/bin/env python3
"""How `pie add`'s time grows with the selection's area, and with the image's size at a fixed selection.

Run with the eval environment's python (numpy, pillow):

  PY=$(bash build/python-env.sh eval-venv tests/eval/requirements.txt 800 "cv2, skimage, numpy, PIL")
  $PY bench/add_scaling.py --library LIB --concept SUBJECT --image scene.png

Three series, every point `pie --json add --device cpu --threads T` with the
same steps, strength and seed, each timed --repeat times (median), the
series interleaved point by point so that load changes hit them alike:

- area: square selections centred in the scene, sides a growing fraction of its
  short side (at least four sizes);
- wider: the same selection in canvases 1x, 2x, 4x, 8x as wide (the scene
  mirrored sideways; same short side, so the same working scale and crop):
  the work is identical, only the image around it grows;
- upscaled: the whole photo and its selection upscaled 1x, 2x, 4x (the engine
  samples at the scene's learned scale, so the working size stays the same).

Reports pie's own `seconds` (session + sampling + blending; no image
decoding/encoding) and the process's wall time. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from add_vs_torch import bbox, plan  # noqa: E402  (mirror of onnx/src/plan.rs)
from common import load, machine, pie_env  # noqa: E402


def square(shape: tuple[int, int], side: int, centre: tuple[int, int] | None = None) -> np.ndarray:
    h, w = shape
    cy, cx = centre or (h // 2, w // 2)
    y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
    m = np.zeros((h, w), np.uint8)
    m[y0:y0 + side, x0:x0 + side] = 255
    return m


def work_px(work: str) -> int:
    w, h = work.split("x")
    return int(w) * int(h)


def widen(img: np.ndarray, k: int) -> np.ndarray:
    """k times as wide: the image, then alternately mirrored copies of it."""
    parts = [img if i % 2 == 0 else img[:, ::-1] for i in range(k)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", type=Path, required=True)
    ap.add_argument("--concept", required=True)
    ap.add_argument("--image", type=Path, required=True, help="the scene photo")
    ap.add_argument("--pie", type=Path, default=ROOT / "target/release/pie")
    ap.add_argument("--steps", type=int, default=50, help="pie add --steps (default 50, pie add's own)")
    ap.add_argument("--strength", type=float, default=0.2,
                    help="pie add --strength (default 0.2, pie add's own for a pixel-unet subject: "
                         "10 UNet evaluations)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fractions", default="0.2,0.35,0.5,0.65,0.8",
                    help="selection sides as fractions of the short side (default 0.2,0.35,0.5,0.65,0.8)")
    ap.add_argument("--widths", default="1,2,4,8", help="canvas width factors (default 1,2,4,8)")
    ap.add_argument("--upscales", default="1,2,4", help="whole-image upscale factors (default 1,2,4)")
    ap.add_argument("--fixed-fraction", type=float, default=0.4,
                    help="the fixed selection's side for the wider/upscaled series, fraction of the short side")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    env = pie_env(args.library.resolve())
    model = json.loads((args.library / args.concept / "bundle.json").read_text())["model"]
    scene = np.asarray(Image.open(args.image).convert("RGB"))
    H, W = scene.shape[:2]
    short = min(H, W)
    tmp = Path(tempfile.mkdtemp(prefix="pie-bench-scale."))
    points: list[dict] = []

    def point(series: str, label: str, img: np.ndarray, sel: np.ndarray) -> None:
        name = f"{series}-{label}"
        ip, sp = tmp / f"{name}.png", tmp / f"{name}-sel.png"
        Image.fromarray(img).save(ip)
        Image.fromarray(sel).save(sp)
        pl = plan(img.shape[1], img.shape[0], bbox(sel > 0), model)
        points.append({"work": f"{pl['work_w']}x{pl['work_h']}", "series": series, "label": label, "image": ip,
                       "selection": sp,
                       "size": f"{img.shape[1]}x{img.shape[0]}", "sel_px": int((sel > 0).sum()),
                       "engine_s": [], "wall_s": []})

    for f in [float(x) for x in args.fractions.split(",")]:
        side = max(8, round(f * short))
        point("area", f"{side}x{side}", scene, square((H, W), side))
    fixed = max(8, round(args.fixed_fraction * short))
    for k in [int(x) for x in args.widths.split(",")]:
        img = widen(scene, k)
        point("wider", f"{k}x", img, square(img.shape[:2], fixed, (H // 2, W // 2)))
    for k in [int(x) for x in args.upscales.split(",")]:
        img = np.asarray(Image.fromarray(scene).resize((W * k, H * k), Image.Resampling.BICUBIC)) if k > 1 else scene
        point("upscaled", f"{k}x", img, square(img.shape[:2], fixed * k, (H * k // 2, W * k // 2)))

    print(f"# add_scaling: {args.concept}, scene {W}x{H}, steps {args.steps}, strength {args.strength}, "
          f"threads {args.threads}, repeat {args.repeat}")
    print(f"# {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load()}")
    for r in range(args.repeat):
        for p in points:
            cmd = [str(args.pie), "--json", "--library", str(args.library), "add", str(p["image"]), "--selection",
                   str(p["selection"]), "--concept", args.concept, "--steps", str(args.steps), "--strength",
                   str(args.strength), "--seed", str(args.seed), "--threads", str(args.threads), "--device", "cpu",
                   "--out", str(tmp / "out.png")]
            t0 = time.perf_counter()
            e = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if e.returncode != 0:
                print(f"{' '.join(cmd)}\n{e.stderr}", file=sys.stderr)
                return 1
            done = [json.loads(line) for line in e.stdout.splitlines() if '"done"' in line][-1]
            p["engine_s"].append(float(done["seconds"]))
            p["wall_s"].append(wall)
        print(f"  pass {r + 1}/{args.repeat} done; {load()}", flush=True)

    print()
    print("| series | point | image | selection px | working size | pie add seconds (median) | process wall s | "
          "vs first of series | ms per 1000 working px |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    first: dict[str, float] = {}
    for p in points:
        e, w = statistics.median(p["engine_s"]), statistics.median(p["wall_s"])
        first.setdefault(p["series"], e)
        print(f"| {p['series']} | {p['label']} | {p['size']} | {p['sel_px']} | {p['work']} | {e:.3f} | {w:.3f} | "
              f"{e / first[p['series']]:.2f}x | {1e6 * e / work_px(p['work']):.1f} |")
    if args.out:
        args.out.write_text(json.dumps([{k: (str(v) if isinstance(v, Path) else v) for k, v in p.items()}
                                        for p in points], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
