"""Same seed, same device: the same weights, bit for bit."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import run_trainer


def train(lib: Path, image: Path, seed: int) -> dict[str, torch.Tensor]:
    run = run_trainer("scene", str(image), "--name", "d", "--library", str(lib), "--steps", "6",
                      "--resolution", "16", "--threads", "1", "--precision", "fp32", "--preview-every", "0",
                      "--seed", str(seed))
    assert run.rc == 0, run.stderr[-2000:]
    return torch.load(lib / "d" / "weights.pt", weights_only=True)["state_dict"]


def test_same_seed_same_weights(tmp_path: Path, photos: dict) -> None:
    a = train(tmp_path / "a", photos["scene"], 5)
    b = train(tmp_path / "b", photos["scene"], 5)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(tmp_path / "c", photos["scene"], 6)
    assert not all(torch.equal(a[k], c[k]) for k in a)
