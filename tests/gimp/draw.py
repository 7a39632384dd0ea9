"""Draws the GIMP tests' photos when ../shared/data is not beside the clone:
a landscape (sky gradient, hills, textured meadow) and a subject (a red ball
with a highlight on a plain backdrop). Deterministic.

  python draw.py SCENE.png SUBJECT.png
"""
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def scene(path, w=282, h=176):
    rng = np.random.default_rng(7)
    y = np.linspace(0, 1, h)[:, None]
    sky = np.stack([120 + 80 * y, 160 + 60 * y, 230 - 20 * y], -1) * np.ones((1, w, 1))
    img = sky.copy()
    xs = np.arange(w)
    ridge = (h * 0.45 + 18 * np.sin(xs / 23.0) + 9 * np.sin(xs / 7.3)).astype(int)
    for x in xs:
        img[ridge[x]:, x] = (70, 110, 60)
    meadow = (h * 0.7 + 6 * np.sin(xs / 40.0)).astype(int)
    for x in xs:
        img[meadow[x]:, x] = (90, 150, 70)
    img += rng.normal(0, 9, img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(0.6))
    im.save(path)


def subject(path, size=256):
    im = Image.new("RGB", (size, size), (200, 196, 188))
    d = ImageDraw.Draw(im)
    d.ellipse((48, 48, 208, 208), fill=(190, 30, 40))
    d.ellipse((90, 80, 130, 115), fill=(240, 150, 150))
    d.ellipse((60, 200, 200, 230), fill=(150, 146, 140))
    arr = np.asarray(im).astype(float) + np.random.default_rng(3).normal(0, 5, (size, size, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(0.8)).save(path)


if __name__ == "__main__":
    scene(sys.argv[1])
    subject(sys.argv[2])
