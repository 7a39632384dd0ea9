"""The engine launches the trainer in Python's isolated mode (-I), either installed
(`python -I -m pie_trainer`) or from its folder through a one-line bootstrap; neither
may import anything from the current folder or from PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TRAINER, bundle_problems, parse_stream

# What the engine runs when pie_trainer is not installed in the environment:
# python -I -c BOOTSTRAP TRAINER_PATH ARGS...
BOOTSTRAP = ('import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); '
             'runpy.run_module("pie_trainer", run_name="__main__", alter_sys=True)')


@pytest.fixture()
def poisoned(tmp_path: Path) -> Path:
    """A working folder whose numpy.py and torch/ would leave a marker if ever imported."""
    cwd = tmp_path / "cwd"
    (cwd / "torch").mkdir(parents=True)
    for f in (cwd / "numpy.py", cwd / "torch" / "__init__.py", cwd / "PIL.py"):
        f.write_text(f"open({str(tmp_path / 'MARKER')!r}, 'a').write({f.name!r})\nraise ImportError('poisoned')\n")
    return cwd


def isolated_env(poisoned: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    e["PYTHONPATH"] = str(poisoned)         # ignored under -I, as it must be
    e["OMP_NUM_THREADS"] = "1"
    return e


def launch(how: str, poisoned: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ([sys.executable, "-I", "-c", BOOTSTRAP, str(TRAINER), *args] if how == "bootstrap"
           else [sys.executable, "-I", "-m", "pie_trainer", *args])
    return subprocess.run(cmd, cwd=poisoned, env=isolated_env(poisoned), capture_output=True, text=True,
                          timeout=300)


def installed() -> bool:
    p = subprocess.run([sys.executable, "-I", "-c", "import pie_trainer"], capture_output=True, cwd="/")
    return p.returncode == 0


@pytest.mark.parametrize("how", ["bootstrap", "installed"])
def test_help_in_isolated_mode_imports_nothing_from_the_working_folder(poisoned: Path, how: str) -> None:
    if how == "installed" and not installed():
        pytest.skip("pie_trainer is not installed in this environment")
    for args in (["--help"], ["scene", "--help"]):
        p = launch(how, poisoned, *args)
        assert p.returncode == 0, p.stderr[-2000:]
        text = p.stdout + p.stderr       # the trainer keeps stdout for the progress stream
        assert f"usage: python -m pie_trainer {args[0] if len(args) > 1 else ''}".rstrip() in text, text[:500]
    assert not (poisoned.parent / "MARKER").exists()


def test_a_scene_trains_through_the_bootstrap(poisoned: Path, tmp_path: Path) -> None:
    from PIL import Image
    image = tmp_path / "scene.png"
    Image.radial_gradient("L").resize((64, 48)).convert("RGB").save(image)
    lib = tmp_path / "lib"
    p = launch("bootstrap", poisoned, "scene", str(image), "--name", "iso", "--library", str(lib), "--steps", "2",
               "--resolution", "16", "--threads", "1", "--precision", "fp32", "--preview-every", "0")
    assert p.returncode == 0, p.stderr[-3000:]
    assert parse_stream(p.stdout)[-1]["event"] == "done"
    assert bundle_problems(lib / "iso") == []
    assert json.loads((lib / "iso" / "bundle.json").read_text())["name"] == "iso"
    # Usage errors name the command as users type it, not the bootstrap's argv[0].
    bad = launch("bootstrap", poisoned, "scene", "--bogus")
    assert bad.returncode == 2 and "python -m pie_trainer scene: " in bad.stdout + bad.stderr
    assert not (poisoned.parent / "MARKER").exists()
