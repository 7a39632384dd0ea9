"""The benchmark's inputs, drawn here so nothing is downloaded: a SIZE x SIZE scene (a sky-to-ground
gradient with a sun), a subject (a red ball on white) and a selection (a centred square, a quarter of
the image's area). Speed does not depend on the pictures.

    python bench/sd_gpu/inputs.py FOLDER [--size 512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--size", type=int, default=512, help="side of the square scene in pixels (default 512)")
    a = ap.parse_args(argv)
    n = a.size
    a.folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    sky = np.stack([0.45 + 0.3 * y, 0.6 + 0.2 * y, 0.95 - 0.3 * y], -1)
    ground = np.stack([0.35 + 0 * y, 0.5 - 0.1 * y, 0.2 + 0 * y], -1)
    scene = np.where((y > 0.6)[..., None], ground, sky)
    scene[(x - 0.75) ** 2 + (y - 0.2) ** 2 < 0.006] = (1.0, 0.95, 0.7)
    Image.fromarray((scene * 255).astype(np.uint8)).save(a.folder / "scene.png")
    m = 256
    yy, xx = np.mgrid[0:m, 0:m] / m
    ball = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.12)[..., None]
    subject = np.where(ball, np.array([0.85, 0.15, 0.1]), np.array([1.0, 1.0, 1.0]))
    Image.fromarray((subject * 255).astype(np.uint8)).save(a.folder / "subject.png")
    sel = np.zeros((n, n), np.uint8)
    sel[n // 4: 3 * n // 4, n // 4: 3 * n // 4] = 255
    Image.fromarray(sel).save(a.folder / "selection.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
