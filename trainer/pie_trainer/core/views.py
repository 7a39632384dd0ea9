"""Training views of the images, for every backbone: multi-scale random crops of the
scene, whole-subject views of the subject, the subject's cut-out.

All randomness comes from the torch.Generator passed in, so a seed fixes the data.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter

SCENE_SCALES = (0.5, 0.625, 0.75, 1.0)   # short sides, as fractions of the working short side
SUBJECT_MARGIN = 0.04                     # border kept around the subject's bounding box, per side
SUBJECT_ZOOMS = (1.0, 1.06, 1.12)         # mild scale augmentation of the subject view
MIN_INCLUDED = 0.25    # a scene crop with less than this fraction of learnable pixels is drawn again
CROP_REDRAWS = 8       # ... at most this many times, then the most learnable of the draws is kept


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


def randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, high, (1,), generator=gen).item()) if high > 1 else 0


def fill_excluded(rgb: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3] with the excluded pixels replaced by a smooth fill of their surroundings.

    Push-pull: average the known pixels over ever coarser 2x2 blocks, then fill each
    hole from the next coarser level, and blur the filled part. The excluded content
    thereby never reaches the model, not even as the noisy input around a learned pixel.
    """
    known = ~excluded
    colour = rgb.astype(np.float64) * known[..., None]
    filled = _push_pull(colour, known.astype(np.float64))
    out = np.where(known[..., None], rgb.astype(np.float64), filled)
    soft = np.asarray(Image.fromarray(out.round().clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2)))
    return np.where(known[..., None], rgb, soft).astype(np.uint8)


def _push_pull(colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """colour: premultiplied sums [h, w, 3]; weight: [h, w]. Returns a colour everywhere."""
    h, w = weight.shape
    if (weight > 0).all() or (h == 1 and w == 1):
        return colour / np.maximum(weight, 1e-12)[..., None]
    c = np.pad(colour, ((0, h % 2), (0, w % 2), (0, 0)))
    k = np.pad(weight, ((0, h % 2), (0, w % 2)))
    h2, w2 = c.shape[0] // 2, c.shape[1] // 2
    coarse = _push_pull(c.reshape(h2, 2, w2, 2, 3).sum(axis=(1, 3)), k.reshape(h2, 2, w2, 2).sum(axis=(1, 3)))
    up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:h, :w]
    return np.where((weight > 0)[..., None], colour / np.maximum(weight, 1e-12)[..., None], up)


def resize_exclude(exclude: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [h, w] exclusion at another (width, height): any trace of an excluded pixel excludes
    the resized pixel, and one pixel more around it for the reach of the image's resampling filter."""
    m = Image.fromarray(exclude.astype(np.uint8) * 255)
    if m.size != size:
        m = m.resize(size, Image.Resampling.BOX)
    return np.asarray(m.filter(ImageFilter.MaxFilter(3))) > 0


class SceneCrops:
    """Random R x R crops of the scene resized to several short sides, random h-flips.

    With `exclude` (bool [h, w], True = never learned) the excluded pixels are
    filled from their surroundings and every crop comes with a loss weight of 0
    there; crops that are almost all excluded are drawn again.
    """

    def __init__(self, scene: Image.Image, resolution: int, short_side: int,
                 exclude: np.ndarray | None = None) -> None:
        self.resolution = resolution
        self.levels: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] | None = None
        rgb = scene.convert("RGB")
        if exclude is not None:
            rgb = Image.fromarray(fill_excluded(np.asarray(rgb), exclude))
            self.weights = []
        self.scene = rgb    # what the crops are cut from (the excluded pixels filled)
        for f in SCENE_SCALES:
            s = max(resolution, round(short_side * f))
            level = resize_short_side(rgb, s)
            self.levels.append(to_tensor(np.asarray(level)))
            if self.weights is not None:
                assert exclude is not None
                keep = ~resize_exclude(exclude, level.size)
                self.weights.append(torch.from_numpy(keep.astype(np.float32))[None])

    def sample(self, n: int, gen: torch.Generator, r: int | None = None) -> torch.Tensor:
        return self.sample_weighted(n, gen, r)[0]

    def sample_weighted(self, n: int, gen: torch.Generator,
                        r: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops [n, 3, r, r] and their loss weights [n, 1, r, r] (all 1 without an exclude mask);
        r defaults to the resolution and may be smaller (a coarse phase: same pixels, smaller window)."""
        r = self.resolution if r is None else min(r, self.resolution)
        out = torch.empty((n, 3, r, r))
        wout = torch.ones((n, 1, r, r))
        for i in range(n):
            best: tuple[float, torch.Tensor, torch.Tensor] | None = None
            for _ in range(1 if self.weights is None else CROP_REDRAWS):
                k = randint(len(self.levels), gen)
                img = self.levels[k]
                _, h, w = img.shape
                y, x = randint(h - r + 1, gen), randint(w - r + 1, gen)
                crop = img[:, y:y + r, x:x + r]
                wgt = self.weights[k][:, y:y + r, x:x + r] if self.weights is not None else wout[i]
                if randint(2, gen):
                    crop, wgt = crop.flip(2), wgt.flip(2)
                share = float(wgt.mean())
                if best is None or share > best[0]:
                    best = (share, crop, wgt)
                if share >= MIN_INCLUDED:
                    break
            assert best is not None
            out[i], wout[i] = best[1], best[2]
        return out, wout


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
            img, wgt = self.views[randint(len(self.views), gen)]
            s = img.shape[1]
            y, x = randint(s - r + 1, gen), randint(s - r + 1, gen)
            a, b = img[:, y:y + r, x:x + r], wgt[:, y:y + r, x:x + r]
            if randint(2, gen):
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
