"""The four scores of pie's quality evaluation (tests/eval/evaluate.py).

Every function takes 8-bit RGB images as numpy arrays (H, W, 3) and masks as
arrays (H, W) where a non-zero value means "inside". The `selection` is the
region the user selected (the same for every method); `placement` is where
the subject cut-out lands when it is scaled to fit the selection's bounds
(the naive paste's alpha), used by subject fidelity.

Lower is better for seam and harmonization, higher for subject fidelity, and
background preservation must be exactly 0 for a method that promises to keep
every pixel outside the selection.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage  # scikit-image depends on SciPy; it is always there with it
from skimage.color import rgb2lab
from skimage.metrics import structural_similarity


def _mask(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim == 3:
        m = m[..., 0]
    return m > 0


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.shape[-1] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        raise TypeError(f"expected 8-bit RGB, got {img.dtype}")
    return img


def luminance(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an 8-bit RGB image, float in [0, 255]."""
    f = _rgb(img).astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    """|∇Y| = sqrt((∂Y/∂x)² + (∂Y/∂y)²) of the luma Y, central differences (numpy.gradient), per pixel."""
    gy, gx = np.gradient(luminance(img))
    return np.hypot(gx, gy)


def boundary_band(selection: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within `width` px of the selection's boundary, on either side: dilate(S, w) XOR erode(S, w)
    (3x3 cross structuring element, so a 1-px band on each side for width 1). Pixels on the image's own
    border are not counted: the image ends there, the selection does not meet the scene there."""
    sel = _mask(selection)
    inner = ndimage.binary_erosion(sel, iterations=width, border_value=1)
    outer = ndimage.binary_dilation(sel, iterations=width)
    band = outer & ~inner
    band[:width, :] = band[-width:, :] = False
    band[:, :width] = band[:, -width:] = False
    return band


def background_preservation(result: np.ndarray, scene: np.ndarray, selection: np.ndarray) -> int:
    """max over pixels p outside the selection and channels c of |result[p, c] - scene[p, c]|
    (8-bit levels; 0 means every pixel outside the selection is kept exactly)."""
    r, s = _rgb(result).astype(np.int16), _rgb(scene).astype(np.int16)
    if r.shape != s.shape:
        raise ValueError(f"result {r.shape} and scene {s.shape} differ in size")
    outside = ~_mask(selection)
    if not outside.any():
        return 0
    return int(np.abs(r - s)[outside].max())


def seam(result: np.ndarray, scene: np.ndarray, selection: np.ndarray, width: int = 1) -> float:
    """mean_{p ∈ B} |∇Y_result(p)| / median_{p ∈ scene} |∇Y_scene(p)|, where B = boundary_band(selection, width)
    straddles the selection's edge and Y is luma: how strong the edges are across the seam, in units of the
    scene's typical edge (an untouched textured scene scores about 1-2; a pasted bright square far more)."""
    band = boundary_band(selection, width)
    if not band.any():
        raise ValueError("the selection has no boundary inside the image")
    g_scene = gradient_magnitude(scene)
    ref = float(np.median(g_scene))
    if ref < 1e-3:  # a flat scene: fall back to the mean, then to one level per pixel
        ref = max(float(g_scene.mean()), 1.0)
    return float(gradient_magnitude(result)[band].mean() / ref)


def rim_masks(selection: np.ndarray, rim: int) -> tuple[np.ndarray, np.ndarray]:
    """(inner, outer): the selection's pixels within `rim` px of its edge, and the pixels outside it within
    `rim` px (both without the image's own border)."""
    sel = _mask(selection)
    inner = sel & ~ndimage.binary_erosion(sel, iterations=rim, border_value=1)
    outer = ndimage.binary_dilation(sel, iterations=rim) & ~sel
    return inner, outer


def lab_stats(img: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(mean L*, mean a*, mean b*, std L*, std a*, std b*) of the CIE Lab pixels (D65) in `region`."""
    lab = rgb2lab(_rgb(img))[_mask(region)]
    if lab.shape[0] == 0:
        raise ValueError("empty region")
    return np.concatenate([lab.mean(axis=0), lab.std(axis=0)])


def harmonization(result: np.ndarray, selection: np.ndarray, rim: int = 6) -> float:
    """‖lab_stats(result, inner rim) − lab_stats(result, outer rim)‖₂: the Euclidean distance (in Lab units)
    between the colour mean and spread of the inserted region's rim (the selection's pixels within `rim` px of
    its edge) and those of the scene just outside it (the `rim` px around the selection)."""
    inner, outer = rim_masks(selection, rim)
    return float(np.linalg.norm(lab_stats(result, inner) - lab_stats(result, outer)))


def subject_fidelity(result: np.ndarray, reference: np.ndarray, placement: np.ndarray) -> float:
    """mean over p in the placement mask of SSIM_map(result, reference)(p), where the SSIM map (scikit-image,
    7x7 window, per RGB channel then averaged, data range 255) is computed on the placement's bounding box and
    `reference` is the subject cut-out scaled into the same bounds over the scene (the naive paste): 1 means the
    subject is exactly there, so naive paste is the ceiling."""
    pm = _mask(placement)
    if not pm.any():
        raise ValueError("empty placement")
    ys, xs = np.nonzero(pm)
    pad = 3
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + 1 + pad, pm.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + 1 + pad, pm.shape[1])
    a = _rgb(result)[y0:y1, x0:x1]
    b = _rgb(reference)[y0:y1, x0:x1]
    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError("placement too small for SSIM")
    _, smap = structural_similarity(a, b, win_size=win, channel_axis=2, data_range=255, full=True)
    return float(smap.mean(axis=2)[pm[y0:y1, x0:x1]].mean())


def harmonization_parts(result: np.ndarray, selection: np.ndarray, rim: int = 6) -> tuple[float, float]:
    """(‖Δ mean‖₂, ‖Δ std‖₂) of the same Lab statistics as harmonization(): which of colour or spread (texture,
    sharpness, grain) differs between the inserted region's rim and the scene around it. Diagnostic only."""
    inner, outer = rim_masks(selection, rim)
    d = lab_stats(result, inner) - lab_stats(result, outer)
    return float(np.linalg.norm(d[:3])), float(np.linalg.norm(d[3:]))
