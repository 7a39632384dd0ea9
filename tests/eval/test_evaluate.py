"""Tests of the evaluation harness (tests/eval/evaluate.py) without pie: the baselines and the outputs.

Uses scikit-image's bundled photos, so it needs neither ../shared/data nor a pie build.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as ev  # noqa: E402
import scores  # noqa: E402


def disc_subject(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).astype(np.uint8) * 255
    img = np.zeros((size, size, 3), np.uint8)
    img[...] = (30, 30, 30)
    img[mask > 0] = (220, 40, 40)
    return img, mask


def test_place_subject_fits_the_selection_and_keeps_the_aspect():
    img, mask = disc_subject()
    sel = (20, 10, 40, 24)
    colour, alpha = ev.place_subject(img, mask, sel, (60, 80))
    ys, xs = np.nonzero(alpha > 0.5)
    assert xs.min() >= 20 and xs.max() < 60 and ys.min() >= 10 and ys.max() < 34
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    # as pie places it: inside the 2-px faded edge, 1 px (5 %) left below for the shadow: 19 px tall
    assert abs(h - w) <= 2 and h >= 18  # a disc stays round, as tall as that allows
    assert ys.max() == 10 + 2 + 19 - 1  # standing on the bottom of that box
    assert abs((xs.min() + xs.max()) / 2 - 39.5) <= 1  # centred across
    assert (alpha[:, :20] == 0).all() and (alpha[34:] == 0).all()
    assert np.allclose(colour[alpha > 0.99], np.array([220, 40, 40]) / 255, atol=0.02)


def test_baselines_keep_everything_outside_the_selection():
    rng = np.random.default_rng(0)
    scene = rng.integers(60, 120, (60, 80, 3)).astype(np.uint8)
    img, mask = disc_subject()
    sel_rect = (20, 10, 40, 30)
    sel = ev.rect_mask((60, 80), sel_rect)
    colour, alpha = ev.place_subject(img, mask, sel_rect, (60, 80))
    placement = (alpha >= 0.5).astype(np.uint8) * 255
    naive = ev.naive_paste(scene, colour, alpha)
    poisson = ev.poisson_blend(scene, colour, placement)
    assert scores.background_preservation(naive, scene, sel) == 0
    assert scores.background_preservation(poisson, scene, sel) == 0
    assert scores.subject_fidelity(naive, naive, placement) == pytest.approx(1.0)
    assert scores.subject_fidelity(poisson, naive, placement) < 1.0


def test_grabcut_finds_the_cat():
    cat = ev.registry_pairs()[0].subject
    img = ev.skimage_photo(cat.skimage_name)
    m = ev.subject_mask(img, cat)
    assert m.shape == img.shape[:2] and set(np.unique(m)) <= {0, 255}
    assert 0.15 < (m > 0).mean() < 0.9


def test_baselines_only_run_writes_table_json_and_sheet(tmp_path):
    rc = ev.main(["--registry-photos", "--methods", "naive,poisson", "--pairs", "rocket+chelsea",
                  "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "results.json").read_text())
    (row,) = data["pairs"]
    assert row["scores"]["naive"]["fidelity"] == pytest.approx(1.0)
    assert row["scores"]["naive"]["preservation"] == 0 and row["scores"]["poisson"]["preservation"] == 0
    assert row["scores"]["poisson"]["harmonization"] < row["scores"]["naive"]["harmonization"]
    assert "rocket+chelsea" in (tmp_path / "results.md").read_text()
    # the untouched scene is scored too, as a reference row (not a method)
    assert row["scene_as_is"]["seam"] > 0 and row["scene_as_is"]["harmonization"] >= 0
    assert "scene as is (reference)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "sheet-rocket+chelsea.png").stat().st_size > 10_000
    before = data["pairs"][0]["scores"]
    assert ev.main(["--rescore", "--out", str(tmp_path)]) == 0
    after = json.loads((tmp_path / "results.json").read_text())["pairs"][0]["scores"]
    for m in before:
        assert after[m] == pytest.approx(before[m])
