"""Shared helpers and session fixtures for the trainer's tests.

The tests train for real, briefly (tiny step counts, small resolutions, one
thread). Photographs: ../shared/data from the repository root when it is
there (the project's test photos: a scene and a subject); otherwise images
drawn in code below, so that a fresh clone's test run works on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

TRAINER = Path(__file__).resolve().parent.parent
REPO = TRAINER.parent
SCHEMA = REPO / "schema"
SHARED_DATA = REPO.parent / "shared" / "data"

# Small settings so the whole suite stays within a few minutes on 2 shared cores.
SCENE_STEPS = 300
SUBJECT_STEPS = 200
RES = 32


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(TRAINER) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["OMP_NUM_THREADS"] = "1"
    e.pop("PIE_HOME", None)
    return e


def trainer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pie_trainer", *args]


_progress_validator = jsonschema.Draft202012Validator(json.loads((SCHEMA / "progress.schema.json").read_text()))
_bundle_validator = jsonschema.Draft202012Validator(json.loads((SCHEMA / "bundle.schema.json").read_text()))


def parse_stream(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be one protocol event (schema/progress.schema.json)."""
    events = []
    for line in stdout.splitlines():
        obj = json.loads(line)
        _progress_validator.validate(obj)
        events.append(obj)
    return events


@dataclass
class Run:
    rc: int
    events: list[dict[str, Any]]
    stderr: str

    def last(self, event: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == event]
        assert found, f"no {event!r} event; events: {self.events[-5:]}\nstderr:\n{self.stderr[-3000:]}"
        return found[-1]


def run_trainer(*args: str, timeout: float = 300) -> Run:
    p = subprocess.run(trainer_cmd(*args), capture_output=True, text=True, env=env(), timeout=timeout)
    return Run(p.returncode, parse_stream(p.stdout), p.stderr)


def bundle_problems(folder: Path) -> list[str]:
    """Everything the engine would check: manifest schema, every file present with its sha256."""
    try:
        manifest = json.loads((folder / "bundle.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"bundle.json: {exc}"]
    problems = [e.message for e in _bundle_validator.iter_errors(manifest)]
    for f in manifest.get("files", []):
        p = folder / f["path"]
        if not p.is_file():
            problems.append(f"missing {f['path']}")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != f["sha256"] or p.stat().st_size != f["bytes"]:
            problems.append(f"{f['path']} does not match its sha256/size")
    return problems


def visible_entries(library: Path) -> list[Path]:
    return sorted(p for p in library.iterdir() if not p.name.startswith(".")) if library.exists() else []


# ---- images -----------------------------------------------------------------

def drawn_scene(path: Path) -> Path:
    """A lake-and-mountains picture drawn in code (used when ../shared/data is absent)."""
    w, h = 280, 176
    y = np.linspace(0, 1, h)[:, None, None]
    sky = np.array([70, 120, 200]) * (1 - y) + np.array([200, 220, 240]) * y
    img = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.polygon([(0, 120), (60, 50), (120, 110), (190, 40), (280, 115), (280, 176), (0, 176)], fill=(80, 90, 100))
    d.polygon([(0, 130), (280, 125), (280, 176), (0, 176)], fill=(40, 90, 60))
    d.rectangle([0, 150, 280, 176], fill=(50, 80, 130))
    rng = np.random.default_rng(0)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH).save(path)
    return path


def drawn_subject(path: Path, mask_path: Path) -> tuple[Path, Path]:
    """A red 'backpack' on a light background, with its exact mask."""
    w, h = 200, 240
    img = Image.new("RGB", (w, h), (225, 225, 220))
    mask = Image.new("L", (w, h), 0)
    for im, col in ((img, (190, 30, 50)), (mask, 255)):
        d = ImageDraw.Draw(im)
        d.rounded_rectangle([50, 50, 150, 210], radius=30, fill=col)
        d.rounded_rectangle([75, 20, 125, 60], radius=15, outline=col, width=8)
    d = ImageDraw.Draw(img)
    d.rectangle([70, 120, 130, 170], fill=(150, 20, 40))
    img.save(path)
    mask.save(mask_path)
    return path, mask_path


def red_mask(subject: Path, mask_path: Path) -> Path:
    """A mask of the subject's red pixels (the DreamBooth backpack is red), closed up a little."""
    a = np.asarray(Image.open(subject).convert("RGB")).astype(int)
    m = (a[..., 0] > a[..., 1] + 40) & (a[..., 0] > a[..., 2] + 20)
    im = Image.fromarray((m * 255).astype(np.uint8))
    im = im.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.MinFilter(5))
    im.save(mask_path)
    return mask_path


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("photos")
    scene = SHARED_DATA / "scenes" / "mountains.png"
    subject = SHARED_DATA / "instances" / "backpack.jpg"
    if scene.is_file() and subject.is_file():
        return {"scene": scene, "subject": subject, "mask": red_mask(subject, d / "mask.png"), "real": True}  # type: ignore[dict-item]
    s, m = drawn_subject(d / "subject.png", d / "mask.png")
    return {"scene": drawn_scene(d / "scene.png"), "subject": s, "mask": m, "real": False}  # type: ignore[dict-item]


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("library")


@pytest.fixture(scope="session")
def scene_run(photos: dict[str, Path], library: Path) -> Run:
    """Stage I, trained once for the whole session (exercises the start-up benchmark too)."""
    run = run_trainer("scene", str(photos["scene"]), "--name", "lake", "--library", str(library),
                      "--quick", "--steps", str(SCENE_STEPS), "--resolution", str(RES), "--threads", "1",
                      "--bench-steps", "3", "--preview-every", "150")
    assert run.rc == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def scene_bundle(scene_run: Run, library: Path) -> Path:
    return library / "lake"


@pytest.fixture(scope="session")
def subject_run(scene_bundle: Path, photos: dict[str, Path], library: Path) -> Run:
    run = run_trainer("subject", str(photos["subject"]), "--scene", "lake", "--name", "backpack",
                      "--mask", str(photos["mask"]), "--library", str(library), "--quick",
                      "--steps", str(SUBJECT_STEPS), "--threads", "1", "--bench-steps", "2",
                      "--preview-every", "0")
    assert run.rc == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def subject_bundle(subject_run: Run, library: Path) -> Path:
    return library / "backpack"


@pytest.fixture()
def own_library(tmp_path: Path, scene_bundle: Path) -> Path:
    """A private library holding a copy of the session's scene bundle."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copytree(scene_bundle, lib / scene_bundle.name)
    return lib
