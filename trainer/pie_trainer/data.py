"""Training batches: multi-scale random crops of the scene, whole-subject views of the subject.

All randomness comes from the torch.Generator passed in, so a seed fixes the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

SCENE_SCALES = (0.5, 0.625, 0.75, 1.0)   # short sides, as fractions of the working short side
SUBJECT_MARGIN = 0.04                     # border kept around the subject's bounding box, per side
SUBJECT_ZOOMS = (1.0, 1.06, 1.12)         # mild scale augmentation of the subject view


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [h, w, 3] -> float32 [3, h, w] in [-1, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [3, h, w] in [-1, 1] -> uint8 [h, w, 3]."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def resize_short_side(im: Image.Image, short: int) -> Image.Image:
    w, h = im.size
    s = short / min(w, h)
    return im.resize((max(short, round(w * s)), max(short, round(h * s))), Image.Resampling.LANCZOS)


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, high, (1,), generator=gen).item()) if high > 1 else 0


@dataclass
class Batch:
    x0: torch.Tensor      # [N, 3, R, R] in [-1, 1]
    token: torch.Tensor   # [N] int64
    weight: torch.Tensor  # [N, 1, R, R] loss weight (the subject mask; 1 for the scene)


class SceneCrops:
    """Random R x R crops of the scene resized to several short sides, random h-flips."""

    def __init__(self, scene: Image.Image, resolution: int, short_side: int) -> None:
        self.resolution = resolution
        self.levels: list[torch.Tensor] = []
        for f in SCENE_SCALES:
            s = max(resolution, round(short_side * f))
            self.levels.append(to_tensor(np.asarray(resize_short_side(scene.convert("RGB"), s))))

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        r = self.resolution
        out = torch.empty((n, 3, r, r))
        for i in range(n):
            img = self.levels[_randint(len(self.levels), gen)]
            _, h, w = img.shape
            y, x = _randint(h - r + 1, gen), _randint(w - r + 1, gen)
            crop = img[:, y:y + r, x:x + r]
            if _randint(2, gen):
                crop = crop.flip(2)
            out[i] = crop
        return out


class SubjectViews:
    """The subject's whole bounding box (cut out by the mask), square, at the working size.

    Augmentation is mild on purpose (random crops teach texture, not the object):
    a small zoom, a shift of a few pixels, a horizontal flip. The loss weight is
    the mask, and 0 outside the source image, so the subject's own background
    (where a mask was given) is not learned as the subject.
    """

    def __init__(self, subject: Image.Image, mask: np.ndarray | None, resolution: int) -> None:
        rgb = np.asarray(subject.convert("RGB"), dtype=np.uint8)
        h, w = rgb.shape[:2]
        m = np.ones((h, w), np.float32) if mask is None else mask.astype(np.float32)
        ys, xs = np.nonzero(m >= 0.5)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        side = max(y1 - y0, x1 - x0)
        side = int(round(side * (1 + 2 * SUBJECT_MARGIN))) if mask is not None else side
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
        # Square canvas around the box; outside the image: edge pixels, weight 0.
        yy = np.clip(np.arange(top, top + side), 0, h - 1)
        xx = np.clip(np.arange(left, left + side), 0, w - 1)
        inside = (((np.arange(top, top + side) >= 0) & (np.arange(top, top + side) < h))[:, None]
                  & ((np.arange(left, left + side) >= 0) & (np.arange(left, left + side) < w))[None, :])
        canvas = rgb[yy][:, xx]
        weight = m[yy][:, xx] * inside
        self.box = (int(x0), int(y0), int(x1), int(y1))
        self.resolution = resolution
        self.views: list[tuple[torch.Tensor, torch.Tensor]] = []
        for z in SUBJECT_ZOOMS:
            s = max(resolution, int(round(resolution * z)))
            img = Image.fromarray(canvas).resize((s, s), Image.Resampling.LANCZOS)
            wgt = Image.fromarray((weight * 255).astype(np.uint8)).resize((s, s), Image.Resampling.BILINEAR)
            self.views.append((to_tensor(np.asarray(img)), torch.from_numpy(np.asarray(wgt, np.float32) / 255.0)[None]))

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.resolution
        xs = torch.empty((n, 3, r, r))
        ws = torch.empty((n, 1, r, r))
        for i in range(n):
            img, wgt = self.views[_randint(len(self.views), gen)]
            s = img.shape[1]
            y, x = _randint(s - r + 1, gen), _randint(s - r + 1, gen)
            a, b = img[:, y:y + r, x:x + r], wgt[:, y:y + r, x:x + r]
            if _randint(2, gen):
                a, b = a.flip(2), b.flip(2)
            xs[i], ws[i] = a, b
        return xs, ws


def cutout_rgba(subject: Image.Image, mask: np.ndarray | None) -> Image.Image:
    """The subject cut out: RGBA, cropped to the mask's bounding box, alpha = mask.

    Without a mask it is the whole image with alpha 255 everywhere.
    """
    rgba = subject.convert("RGB").convert("RGBA")
    if mask is None:
        return rgba
    rgba.putalpha(Image.fromarray((np.clip(mask, 0, 1) * 255).round().astype(np.uint8)))
    ys, xs = np.nonzero(mask > 0)
    return rgba.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
