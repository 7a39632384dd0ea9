"""Unit tests for tests/eval/scores.py (pytest; no photographs needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scores  # noqa: E402


def textured_scene(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth greenish gradient with mild noise: a stand-in for grass."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([60 + 0.3 * xx, 110 + 0.4 * yy, 50 + 0.1 * xx], axis=-1)
    return np.clip(base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def rect_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture
def scene() -> np.ndarray:
    return textured_scene()


@pytest.fixture
def sel() -> np.ndarray:
    return rect_mask(96, 128, 30, 70, 40, 90)


def test_identical_images(scene, sel):
    assert scores.background_preservation(scene, scene, sel) == 0
    assert scores.subject_fidelity(scene, scene, sel) == pytest.approx(1.0)


def test_preservation_sees_one_changed_pixel_outside(scene, sel):
    r = scene.copy()
    r[40:60, 50:80] = 255  # inside the selection: allowed
    assert scores.background_preservation(r, scene, sel) == 0
    r[5, 5, 1] = np.uint8((int(scene[5, 5, 1]) + 17) % 256)
    assert scores.background_preservation(r, scene, sel) == 17


def test_pasted_bright_square_has_a_worse_seam_than_a_smooth_blend(scene, sel):
    pasted = scene.copy()
    pasted[sel > 0] = (250, 250, 250)
    # The same bright content faded in smoothly from the selection's edge.
    inside = sel > 0
    from scipy import ndimage
    dist = ndimage.distance_transform_edt(inside)
    alpha = np.clip(dist / 12.0, 0, 1)[..., None]
    blended = (alpha * 250 + (1 - alpha) * scene).astype(np.uint8)
    s_paste = scores.seam(pasted, scene, sel)
    s_blend = scores.seam(blended, scene, sel)
    s_none = scores.seam(scene, scene, sel)
    assert s_paste > 3 * s_blend, (s_paste, s_blend)
    assert s_paste > 10 * s_none


def test_untouched_scene_seam_is_about_one(scene, sel):
    s = scores.seam(scene, scene, sel)
    assert 0.5 < s < 2.0, s


def test_harmonization_prefers_matching_colours(scene, sel):
    assert scores.harmonization(scene, sel) < 1.5
    red = scene.copy()
    red[sel > 0] = (200, 30, 30)
    same = textured_scene(seed=1)  # other noise, same colours
    same_ins = scene.copy()
    same_ins[sel > 0] = same[sel > 0]
    assert scores.harmonization(red, sel) > 10 * scores.harmonization(same_ins, sel)


def test_harmonization_sees_an_exposure_change_of_the_inside(scene, sel):
    brighter = scene.copy()
    brighter[sel > 0] = np.clip(scene[sel > 0] * 1.3, 0, 255).astype(np.uint8)
    assert scores.harmonization(brighter, sel) > 3 * scores.harmonization(scene, sel)


def test_harmonization_looks_at_the_outline_only(scene, sel):
    """The subject's inside away from its outline (beyond two bands) is the subject's own business."""
    recoloured = scene.copy()
    recoloured[40:60, 50:80] = (20, 20, 200)  # 10 px and more inside the 40x50 selection
    assert scores.harmonization(recoloured, sel) == pytest.approx(scores.harmonization(scene, sel))
    assert scores.harmonization(recoloured, sel, band=6) != pytest.approx(scores.harmonization(scene, sel, band=6))


def test_subject_fidelity_orders_degradations(scene, sel):
    rng = np.random.default_rng(1)
    ref = scene.copy()
    ys, xs = np.mgrid[0:96, 0:128]
    stripes = ((xs // 4) % 2 * 180 + 40).astype(np.uint8)
    ref[sel > 0] = np.stack([stripes] * 3, axis=-1)[sel > 0]
    slightly = np.clip(ref.astype(int) + rng.normal(0, 5, ref.shape), 0, 255).astype(np.uint8)
    heavily = np.clip(ref.astype(int) + rng.normal(0, 60, ref.shape), 0, 255).astype(np.uint8)
    erased = scene.copy()
    f1, f2, f3 = (scores.subject_fidelity(x, ref, sel) for x in (slightly, heavily, erased))
    assert 1.0 > f1 > f2 > f3
    assert f1 > 0.8 and f3 < 0.3


def test_boundary_band_is_two_pixels_wide(sel):
    band = scores.boundary_band(sel)
    # a 40x50 rectangle: 1 px inside (perimeter 2*(40+50)-4) + 1 px outside (cross dilation: 2*(40+50))
    assert band.sum() == (2 * (40 + 50) - 4) + 2 * (40 + 50)


def test_selection_at_the_image_border_ignores_the_border(scene):
    sel = rect_mask(96, 128, 0, 40, 0, 50)
    band = scores.boundary_band(sel)
    assert not band[0].any() and not band[:, 0].any()
    # the image's border is no outline: only the selection's bottom and right edges are measured
    assert len(scores.outline_steps(scene, sel)) == 40 - 2 + 50 - 2 - 1
    with pytest.raises(ValueError, match="no outline"):
        scores.harmonization(scene, np.ones((96, 128), np.uint8))
