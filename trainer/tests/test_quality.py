"""What the two stages learned, measured on colour statistics of samples.

The scene token must still give the scene's colours after Stage II (prior
preservation), and the subject token must move toward the subject's colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pie_trainer.pixel.diffusion import Schedule, ddim_sample
from pie_trainer.pixel.weights import load_weights

N = 8
# Guidance 1 measures the conditional model itself; CFG > 1 pushes colours past the data's
# (at 3 the subject token gives a saturated red, farther from the subject's mean than at 1).
GUIDANCE = 1.0


def mean_colour(folder: Path, token: int) -> np.ndarray:
    model, info = load_weights(folder / "weights.pt")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(7)
    r = info["resolution"]
    x = ddim_sample(model, torch.full((N,), token, dtype=torch.int64), r, r, Schedule(), steps=25,
                    guidance=GUIDANCE, generator=gen)
    return x.mean(dim=(0, 2, 3)).numpy()


def image_mean(path: Path, use_alpha: bool = False) -> np.ndarray:
    im = Image.open(path)
    a = np.asarray(im.convert("RGB"), np.float32) / 127.5 - 1
    if use_alpha:
        keep = np.asarray(im.getchannel("A")) > 127
        return a[keep].mean(0)
    return a.reshape(-1, 3).mean(0)


def dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def test_scene_token_keeps_the_scene(scene_bundle: Path, subject_bundle: Path) -> None:
    scene = image_mean(scene_bundle / "scene.png")
    subject = image_mean(subject_bundle / "subject.png", use_alpha=True)
    before = mean_colour(scene_bundle, 1)
    after = mean_colour(subject_bundle, 1)
    gap = dist(scene, subject)
    print(f"scene {scene}, subject {subject}, scene token before {before}, after {after}")
    assert dist(before, scene) < 0.5 * gap
    assert dist(after, scene) < 0.5 * gap      # not forgotten
    assert dist(after, scene) < dist(after, subject)


def test_subject_token_moves_toward_the_subject(scene_bundle: Path, subject_bundle: Path) -> None:
    subject = image_mean(subject_bundle / "subject.png", use_alpha=True)
    scene = image_mean(scene_bundle / "scene.png")
    before = mean_colour(scene_bundle, 2)   # token 2 untrained in Stage I
    after = mean_colour(subject_bundle, 2)
    print(f"subject {subject}, subject token before {before}, after {after}")
    assert dist(after, subject) < 0.6 * dist(before, subject)
    assert dist(after, subject) < dist(after, scene)
