"""`scene --exclude MASK`: the excluded pixels never reach training (nor a subject's replay), the
bundle records the mask, and a mask that cannot be used is refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import bundle_problems, run_trainer, visible_entries
from PIL import Image

from pie_trainer.core.views import MIN_INCLUDED, SceneCrops
from pie_trainer.pixel.train import masked_mse

MAGENTA = np.array([255, 0, 255])


def magenta_pixels(rgb: np.ndarray) -> int:
    """Pixels close to the excluded colour (nothing else in these scenes is near it)."""
    a = rgb.astype(int)
    return int(((a[..., 0] > 170) & (a[..., 1] < 90) & (a[..., 2] > 170)).sum())


def scene_with_object(path: Path, colour: tuple[int, int, int] = (255, 0, 255)) -> Path:
    rng = np.random.default_rng(3)
    a = rng.integers(50, 130, (96, 128, 3)).astype(np.uint8)
    a[:, :, 1] = np.linspace(60, 140, 128).astype(np.uint8)[None, :]   # some structure to learn
    a[30:60, 40:80] = colour                                           # the object: must never be seen
    Image.fromarray(a).save(path)
    return path


def object_mask(path: Path, size: tuple[int, int] = (128, 96), box: tuple[int, int, int, int] = (38, 28, 82, 62),
                ) -> Path:
    m = np.zeros((size[1], size[0]), np.uint8)
    m[box[1]:box[3], box[0]:box[2]] = 200      # above 127: excluded
    Image.fromarray(m).save(path)
    return path


def scene_args(image: Path, lib: Path, name: str, *extra: str) -> list[str]:
    return ["scene", str(image), "--name", name, "--library", str(lib), "--steps", "3", "--resolution", "16",
            "--threads", "1", "--precision", "fp32", "--preview-every", "0", *extra]


def test_masked_loss_gives_no_gradient_from_excluded_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(2, 3, 8, 8, generator=gen, requires_grad=True)
    noise = torch.randn(2, 3, 8, 8, generator=gen)
    weight = torch.ones(2, 1, 8, 8)
    weight[:, :, 2:6, 1:5] = 0.0
    masked_mse(eps, noise, weight).backward()
    assert eps.grad is not None
    excluded = (weight == 0).expand_as(eps)
    assert torch.count_nonzero(eps.grad[excluded]) == 0
    assert torch.count_nonzero(eps.grad[~excluded]) == int((~excluded).sum())
    # Whatever the target is inside the excluded region, the loss is the same, and it is the
    # plain MSE of the included pixels (normalised by their count, not the crop's).
    other = noise.clone()
    other[excluded] = 1e3
    a, b = masked_mse(eps.detach(), noise, weight), masked_mse(eps.detach(), other, weight)
    assert torch.equal(a, b)
    assert torch.allclose(a, (eps.detach() - noise)[~excluded].pow(2).mean())


def test_scene_crops_never_show_the_excluded_content(tmp_path: Path) -> None:
    # Two scenes that differ only inside the excluded box give identical crops and weights:
    # nothing of what is excluded can reach the model, not even as noisy input context.
    a = np.asarray(Image.open(scene_with_object(tmp_path / "a.png"))).copy()
    b = a.copy()
    b[30:60, 40:80] = (0, 255, 0)
    exclude = np.zeros(a.shape[:2], bool)
    exclude[28:62, 38:82] = True
    crops_a = SceneCrops(Image.fromarray(a), 16, 48, exclude)
    crops_b = SceneCrops(Image.fromarray(b), 16, 48, exclude)
    xa, wa = crops_a.sample_weighted(64, torch.Generator().manual_seed(1))
    xb, wb = crops_b.sample_weighted(64, torch.Generator().manual_seed(1))
    assert torch.equal(xa, xb) and torch.equal(wa, wb)
    rgb = ((xa + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert magenta_pixels(rgb) == 0
    assert float(wa.amin()) == 0.0                       # some crops do touch the hole ...
    shares = wa.mean(dim=(1, 2, 3))
    assert float(shares.min()) >= MIN_INCLUDED           # ... but none is mostly hole
    # Without the mask the same scene's crops do show the object, so the test can tell.
    plain = SceneCrops(Image.fromarray(a), 16, 48).sample(64, torch.Generator().manual_seed(1))
    assert magenta_pixels(((plain + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()) > 0


def test_scene_with_exclude_records_the_mask_and_hides_the_object(tmp_path: Path, photos: dict) -> None:
    image = scene_with_object(tmp_path / "scene.png")
    mask = object_mask(tmp_path / "mask.png")
    lib = tmp_path / "lib"
    run = run_trainer(*scene_args(image, lib, "room", "--exclude", str(mask)))
    assert run.rc == 0, run.stderr[-2000:]
    folder = lib / "room"
    assert bundle_problems(folder) == []
    m = json.loads((folder / "bundle.json").read_text())
    rec = m["training"]["exclude_mask"]
    assert rec["sha256"] == hashlib.sha256(mask.read_bytes()).hexdigest()
    assert rec["excluded_fraction"] == pytest.approx(44 * 34 / (128 * 96), abs=1e-6)
    assert rec["file"] == "exclude.png" and "exclude.png" in {f["path"] for f in m["files"]}
    # The bundle itself carries no trace of the object: Stage II replays scene.png.
    assert magenta_pixels(np.asarray(Image.open(folder / "scene.png").convert("RGB"))) == 0
    ex = np.asarray(Image.open(folder / "exclude.png").convert("L")) > 0
    assert ex.shape == np.asarray(Image.open(folder / "scene.png")).shape[:2] and 0.1 < ex.mean() < 0.4

    # A subject grown from it replays the scene with the same pixels left out.
    sub = run_trainer("subject", str(photos["subject"]), "--scene", "room", "--name", "thing", "--mask",
                      str(photos["mask"]), "--library", str(lib), "--steps", "2", "--threads", "1",
                      "--precision", "fp32", "--preview-every", "0")
    assert sub.rc == 0, sub.stderr[-2000:]
    sm = json.loads((lib / "thing" / "bundle.json").read_text())
    assert sm["training"]["replay_excludes"] is True and bundle_problems(lib / "thing") == []


def _refused(tmp_path: Path, image: Path, mask: Path, *words: str) -> None:
    lib = tmp_path / "lib"
    run = run_trainer(*scene_args(image, lib, "bad", "--exclude", str(mask)))
    assert run.rc == 2, run.stderr[-2000:]
    err = run.last("error")
    assert err["kind"] == "bad_input"
    for w in words:
        assert w in err["message"], err["message"]
    assert not lib.exists() or (visible_entries(lib) == [] and not (lib / ".checkpoints").exists())


def test_bad_exclude_masks_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    image = scene_with_object(tmp_path / "scene.png")
    _refused(tmp_path, image, object_mask(tmp_path / "small.png", size=(64, 48), box=(1, 1, 9, 9)),
             "exclude mask", "64x48", "same size")
    text = tmp_path / "notes.png"
    text.write_text("not a picture\n")
    _refused(tmp_path, image, text, "exclude mask", "not an image file")
    _refused(tmp_path, image, object_mask(tmp_path / "all.png", box=(0, 0, 128, 96)), "100.0%", "at most 95%")
    _refused(tmp_path, image, object_mask(tmp_path / "most.png", box=(0, 0, 128, 93)), "96.9%", "at most 95%")
    _refused(tmp_path, image, tmp_path / "absent.png", "exclude mask", "does not exist")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    _refused(tmp_path, image, fifo, "exclude mask", "not a regular file")


def test_exclude_is_refused_for_the_sd_backbone(tmp_path: Path) -> None:
    image = scene_with_object(tmp_path / "scene.png")
    run = run_trainer("scene", str(image), "--name", "s", "--library", str(tmp_path / "lib"), "--backbone", "sd",
                      "--exclude", str(object_mask(tmp_path / "m.png")))
    assert run.rc == 2 and "--exclude" in run.last("error")["message"]
