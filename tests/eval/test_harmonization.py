"""Tests of the ground-truth harmonization benchmark (tests/eval/harmonization.py), without pie.

Synthetic photos for the composites, scores and baselines; the shared photos (../shared/data/harmonization)
only for the check of evaluate.py's harmonization score, skipped without them.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harmonization as hb  # noqa: E402


def synthetic_photo(name: str = "toy", seed: int = 0, h: int = 72, w: int = 96) -> hb.Photo:
    """A smooth textured scene with a disc-shaped 'object' of its own colour and texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scene = np.stack([90 + 0.4 * xx, 120 + 0.3 * yy, 70 + 0.2 * xx], axis=-1)
    mask = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 4) ** 2
    stripes = 40 * np.sin(xx / 3 + seed)
    obj = np.stack([150 + stripes, 80 + 0.5 * stripes, 60 + 0.2 * stripes], axis=-1)
    img = np.where(mask[..., None], obj, scene) + rng.normal(0, 3, (h, w, 3))
    return hb.Photo(name, np.clip(img, 0, 255).astype(np.uint8), mask)


@pytest.fixture
def photos() -> list[hb.Photo]:
    return [synthetic_photo("a", 0), synthetic_photo("b", 1), synthetic_photo("c", 2)]


def test_composites_change_the_object_only_and_visibly(photos):
    comps = hb.make_composites(photos, seed=0)
    assert [c.kind for c in comps[:4]] == list(hb.KINDS) and len(comps) == 4 * len(photos)
    by_name = {p.name: p for p in photos}
    for c in comps:
        p = by_name[c.photo]
        assert np.array_equal(c.image[~p.mask], p.image[~p.mask]), c.name
        assert hb.fmse(c.image, p.image, p.mask) >= hb.MIN_FMSE, c.name


def test_composites_are_deterministic_per_seed(photos):
    a, b = hb.make_composites(photos, seed=3), hb.make_composites(photos, seed=3)
    for x, y in zip(a, b, strict=True):
        assert x.params == y.params and np.array_equal(x.image, y.image)
    c = hb.make_composites(photos, seed=4)
    assert any(x.params != z.params for x, z in zip(a, c, strict=True))
    # a case does not depend on which other photos are run
    (alone,) = hb.make_composites(photos[1:2], seed=3, kinds=("gamma",), pool=photos)
    assert np.array_equal(alone.image, next(x for x in a if x.name == "b-gamma").image)


def test_transfer_takes_its_source_from_another_photo(photos):
    for c in hb.make_composites(photos, seed=0, kinds=("transfer",)):
        assert c.params["from"] != c.photo and c.params["from"] in {p.name for p in photos}


def test_reinhard_transfer_matches_the_target_lab_stats(photos):
    p = photos[0]
    mean, std = np.array([55.0, 10.0, 20.0]), np.array([6.0, 3.0, 4.0])
    lab = hb.transfer_lab(hb.to_lab(p.image), p.mask, mean, std)
    assert np.allclose(lab[p.mask].mean(axis=0), mean) and np.allclose(lab[p.mask].std(axis=0), std)
    out = hb.reinhard(p.image, p.mask, mean, std)
    m, s = hb.lab_stats(out, p.mask)
    # in gamut, so only the 8-bit rounding is left
    assert np.abs(m - mean).max() < 0.5 and np.abs(s - std).max() < 0.5
    assert np.array_equal(out[~p.mask], p.image[~p.mask])


def test_white_balance_is_a_cast_not_an_exposure_change(photos):
    for c in hb.make_composites(photos, seed=0, kinds=("white_balance",)):
        g = np.array(c.params["gains"])
        assert g @ np.array([0.2126, 0.7152, 0.0722]) == pytest.approx(1.0, abs=1e-3)
        assert abs(g[0] - g[2]) > 0.2


def test_scores_of_identical_images():
    p = synthetic_photo()
    s = hb.score(p.image, p.image, p.mask)
    assert s["mse"] == 0 and s["fmse"] == 0 and s["outside_max"] == 0
    assert math.isinf(s["psnr"]) and s["psnr"] > 0
    assert hb.psnr(255.0 ** 2 / 1000) == pytest.approx(30.0)


def test_fmse_counts_only_the_masks_pixels():
    p = synthetic_photo()
    ref = np.full_like(p.image, 100)
    outside = ref.copy()
    outside[~p.mask] = 110
    assert hb.fmse(outside, ref, p.mask) == 0 and hb.mse(outside, ref) > 0
    inside = ref.copy()
    inside[p.mask] = 110
    assert hb.fmse(inside, ref, p.mask) == pytest.approx(100.0)
    assert hb.mse(inside, ref) == pytest.approx(100.0 * p.mask.mean())


def test_lab_baseline_moves_only_the_object_toward_the_background():
    p = synthetic_photo()
    out = hb.lab_baseline(p.image, p.mask)
    assert np.array_equal(out[~p.mask], p.image[~p.mask])
    bg_mean, _ = hb.lab_stats(p.image, ~p.mask)
    obj_before, _ = hb.lab_stats(p.image, p.mask)
    obj_after, _ = hb.lab_stats(out, p.mask)
    assert np.abs(obj_after - bg_mean).max() < 1.0 < np.abs(obj_before - bg_mean).max()


def smooth_photo() -> hb.Photo:
    """A smooth scene whose 'object' is the scene itself: a composite of it is a pure appearance change, which
    Poisson blending undoes up to the shading it cannot see."""
    h, w = 80, 100
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(5)
    img = np.stack([80 + 0.5 * xx, 110 + 0.4 * yy, 60 + 0.3 * xx], axis=-1) + rng.normal(0, 2, (h, w, 3))
    mask = (yy - 40) ** 2 + (xx - 50) ** 2 < 22 ** 2
    return hb.Photo("smooth", np.clip(img, 0, 255).astype(np.uint8), mask)


def test_poisson_stays_inside_and_removes_an_offset():
    p = smooth_photo()
    comp = hb.exposure(p.image, p.mask, 0.8)
    raw = hb.poisson_raw(comp, p.mask)
    diff = np.abs(raw.astype(int) - comp.astype(int))[~p.mask]
    # on a smooth scene OpenCV's solve over the mask's bounding box strays outside the mask by rounding only
    assert diff.mean() < 0.1 and diff.max() <= 3, (diff.mean(), diff.max())
    out = hb.poisson_baseline(comp, p.mask)
    assert np.array_equal(out[~p.mask], comp[~p.mask])
    assert hb.fmse(out, p.image, p.mask) < 0.2 * hb.fmse(comp, p.image, p.mask)


@pytest.mark.skipif(not hb.default_data().is_dir(), reason="needs ../shared/data/harmonization")
def test_poisson_outside_the_mask_on_the_photos():
    """On real outlines OpenCV's clone reaches outside the mask; small on average, which the baseline then
    removes."""
    photos = hb.load_photos(hb.default_data(), ["bear_plushie", "candle"])
    for c in hb.make_composites(photos, seed=0, kinds=("transfer",)):
        mask = next(p.mask for p in photos if p.name == c.photo)
        diff = np.abs(hb.poisson_raw(c.image, mask).astype(int) - c.image.astype(int))[~mask]
        assert diff.mean() < 1.5, (c.name, diff.mean())  # measured: 0.44 on average over the 24 seed-0 cases
        assert np.array_equal(hb.poisson_baseline(c.image, mask)[~mask], c.image[~mask])


def write_set(folder: Path, photos: list[hb.Photo]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        Image.fromarray(p.image).save(folder / f"{p.name}.png")
        Image.fromarray(np.where(p.mask, 255, 0).astype(np.uint8)).save(folder / f"{p.name}_mask.png")


def test_baselines_only_run_writes_table_json_and_sheets(tmp_path, photos):
    data, out = tmp_path / "data", tmp_path / "out"
    write_set(data, photos[:2])
    assert hb.main(["--data", str(data), "--methods", "composite,lab,poisson", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["cases"]) == 8 and res["summary"]["cases"] == 8
    for case in res["cases"]:
        assert set(case["scores"]) == {"composite", "lab", "poisson"}
        assert case["scores"]["lab"]["outside_max"] == 0 and case["scores"]["poisson"]["outside_max"] == 0
    md = (out / "results.md").read_text()
    assert "a-transfer" in md and "iHarmony4 composite" in md and "pie MSE" not in md
    assert (out / "sheet-b-gamma.png").stat().st_size > 5_000
    assert (out / "work/a/exposure-composite.png").is_file()
    small = tmp_path / "small"
    assert hb.main(["--data", str(data), "--methods", "composite", "--size", "48", "--out", str(small)]) == 0
    assert Image.open(small / "work/a/gamma-composite.png").size == (48, 36)


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, photos, capsys):
    data = tmp_path / "data"
    write_set(data, photos[:1])
    (data / "lonely.png").write_bytes((data / "a.png").read_bytes())
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        hb.main(["--data", str(data), "--out", str(out), "--methods", "composite"])
    assert "lonely.png has no mask" in capsys.readouterr().err
    (data / "lonely.png").unlink()
    with pytest.raises(SystemExit):
        hb.main(["--data", str(data), "--out", str(out), "--pie", str(tmp_path / "nope")])
    assert "no pie binary" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        hb.main(["--data", str(data), "--out", str(out), "--methods", "composite", "--photos", "zebra"])
    assert "unknown photos ['zebra']" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not hb.default_data().is_dir(), reason="needs ../shared/data/harmonization")
@pytest.mark.parametrize("size", [None, 256])
def test_pair_harmonization_score_ranks_the_truth_above_its_composites(size):
    photos = hb.load_photos(hb.default_data(), size=size)
    ag = hb.agreement(photos, hb.make_composites(photos, seed=0))
    assert len(ag["cases"]) == 4 * len(photos)
    # measured at seed 0: 0.79 at 512 px and at 256 px (more seeds: scores.harmonization), a coin: 0.5
    assert ag["rate"] >= 0.7, ag["rate"]


FAKE_PIE = """#!{python}
# A stand-in for pie: learn-scene leaves a concept, blend writes the composite back unchanged.
import json, shutil, sys
from pathlib import Path
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
lib = Path(args[args.index("--library") + 1])
def val(k):
    return args[args.index(k) + 1]
if "learn-scene" in args:
    (lib / val("--name")).mkdir(parents=True, exist_ok=True)
    (lib / val("--name") / "bundle.json").write_text("{{}}")
elif "blend" in args:
    assert (lib / val("--concept") / "bundle.json").is_file()
    shutil.copy(args[args.index("blend") + 1], val("--out"))
"""


def test_pie_is_run_with_the_scene_learned_outside_the_object(tmp_path, photos):
    data, out, lib, log = tmp_path / "data", tmp_path / "out", tmp_path / "lib", tmp_path / "calls.jsonl"
    write_set(data, photos[:2])
    fake = tmp_path / "pie"
    fake.write_text(FAKE_PIE.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    common = ["--data", str(data), "--out", str(out), "--pie", str(fake), "--library", str(lib), "--nice", "0",
              "--ort-dylib", "unused", "--trainer-python", "unused", "--kinds", "exposure,gamma"]
    assert hb.main([*common, "--preset", "quick"]) == 0
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    scenes = [c for c in calls if "learn-scene" in c]
    blends = [c for c in calls if "blend" in c]
    assert len(scenes) == 2 and len(blends) == 4
    s = scenes[0]
    assert s[s.index("--exclude") + 1].endswith("work/a/mask.png") and "--quick" in s and "--json" in s
    assert s[s.index("learn-scene") + 1].endswith("work/a/truth.png") and s[s.index("--name") + 1] == "hb-a"
    b = blends[0]
    assert b[b.index("blend") + 1].endswith("work/a/exposure-composite.png")
    assert b[b.index("--mask") + 1].endswith("work/a/mask.png") and b[b.index("--concept") + 1] == "hb-a"
    res = json.loads((out / "results.json").read_text())
    # the stand-in returns the composite: pie scores as the composite does, and fails the goals
    assert res["summary"]["pie_mse_ratio"] == pytest.approx(1.0)
    assert "FAIL" in (out / "results.md").read_text()
    # --reuse keeps the learned scenes
    log.unlink()
    assert hb.main([*common, "--reuse"]) == 0
    assert not any("learn-scene" in json.loads(x) for x in log.read_text().splitlines())


def test_ranking_counts_how_often_the_truth_free_score_orders_methods_as_fmse_does():
    def row(**m):
        return {"scores": {k: {"fmse": f, "outline": o} for k, (f, o) in m.items()}}
    agree = row(composite=(300.0, 3.0), lab=(200.0, 2.0), pie=(100.0, 1.0))
    backwards = row(composite=(300.0, 1.0), poisson=(900.0, 0.5))
    rk = hb.ranking([agree, backwards])
    assert rk["pairs"] == 4
    assert rk["rate"] == 0.75
    assert rk["by_methods"] == {"composite/lab": 1.0, "composite/pie": 1.0, "lab/pie": 1.0, "composite/poisson": 0.0}
    # ties in either score say nothing about the ordering and are left out
    assert hb.ranking([row(a=(1.0, 2.0), b=(1.0, 3.0)), row(a=(1.0, 2.0), b=(5.0, 2.0))])["pairs"] == 0
