"""Files of the concept library that must not be trusted (a FIFO, an oversized or deeply nested
bundle.json, a symlink out of the library, a bad checkpoint meta.json): the trainer never hangs
on them, refuses them with a clear message where they are asked for, and skips them otherwise,
so a bad concept never fails the training of another one."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import bundle_problems, run_trainer, visible_entries

from pie_trainer.core.library import LibraryFileError, read_library_json, taken_identifiers

NESTED = b"[" * 100000 + b"]" * 100000


def fifo(path: Path) -> None:
    os.mkfifo(path)


def oversized(path: Path) -> None:
    path.write_bytes(b'{"pad": "' + b"x" * (2 << 20) + b'"}')


def nested(path: Path) -> None:
    path.write_bytes(NESTED)


def outside(path: Path) -> None:
    # A real, valid-looking manifest, but outside the library.
    lib = next(p for p in path.parents if p.name == "lib")
    target = lib.parent / f"elsewhere-{path.parent.name}.json"
    target.write_text(json.dumps({"format": "pie-bundle", "tokens": {"concepts": [{"identifier": "qqq"}]}}))
    path.symlink_to(target)


BAD: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (fifo, "is not a regular file"),
    "2MB": (oversized, "more than the 1048576 bytes"),
    "nested": (nested, "nested too deeply"),
    "symlink-out": (outside, "points outside the library"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_reader_refuses_each_kind_of_bad_file(tmp_path: Path, case: str) -> None:
    lib = tmp_path / "lib"
    (lib / "bad").mkdir(parents=True)
    make, words = BAD[case]
    make(lib / "bad" / "bundle.json")
    with pytest.raises(LibraryFileError, match=words):
        read_library_json(lib / "bad" / "bundle.json", lib)


def test_a_symlink_inside_the_library_is_followed(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "a" / "real.json").write_text('{"ok": 1}')
    (lib / "a" / "bundle.json").symlink_to(lib / "a" / "real.json")
    assert read_library_json(lib / "a" / "bundle.json", lib)[0] == {"ok": 1}


def _poison(lib: Path) -> None:
    """One bad concept of each kind, and a bad checkpoint meta.json of each kind."""
    for case, (make, _) in BAD.items():
        (lib / f"bad-{case}").mkdir(parents=True)
        make(lib / f"bad-{case}" / "bundle.json")
        ck = lib / ".checkpoints" / f"bad-{case}"
        ck.mkdir(parents=True)
        make(ck / "meta.json")


def test_bad_concepts_do_not_stop_another_concept_from_training(own_library: Path, photos: dict) -> None:
    _poison(own_library)
    # The identifiers of the good concept are still found; every bad one is reported and skipped.
    good = json.loads((own_library / "lake" / "bundle.json").read_text())["tokens"]["concepts"][0]["identifier"]
    assert taken_identifiers(own_library) == {good}
    run = run_trainer("scene", str(photos["scene"]), "--name", "fresh", "--library", str(own_library),
                      "--steps", "2", "--resolution", "16", "--threads", "1", "--precision", "fp32",
                      "--preview-every", "0", timeout=120)
    assert run.rc == 0, run.stderr[-3000:]
    assert bundle_problems(own_library / "fresh") == []
    for case, (_, words) in BAD.items():
        assert f"skipping 'bad-{case}'" in run.stderr and words in run.stderr
        assert f"ignoring the checkpoint 'bad-{case}'" in run.stderr
    m = json.loads((own_library / "fresh" / "bundle.json").read_text())
    assert m["tokens"]["concepts"][0]["identifier"] != good


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_scene_bundle_is_refused_not_hung_on(own_library: Path, photos: dict, case: str) -> None:
    make, words = BAD[case]
    (own_library / "bad").mkdir()
    make(own_library / "bad" / "bundle.json")
    run = run_trainer("subject", str(photos["subject"]), "--scene", "bad", "--name", "x", "--library",
                      str(own_library), "--backbone", "pixel-unet", "--steps", "2", timeout=60)
    assert run.rc == 2, run.stderr[-2000:]
    msg = run.last("error")["message"]
    assert "'bad'" in msg and words in msg, msg
    assert [p.name for p in visible_entries(own_library)] == ["bad", "lake"]


@pytest.mark.parametrize("which", ["weights.pt", "scene.png"])
def test_a_scene_file_swapped_for_a_fifo_or_an_outside_link(own_library: Path, photos: dict, tmp_path: Path,
                                                            which: str) -> None:
    scene = own_library / "lake"
    for kind in ("fifo", "link"):
        saved = tmp_path / f"saved-{which}"
        shutil.move(scene / which, saved)
        if kind == "fifo":
            os.mkfifo(scene / which)
        else:
            (scene / which).symlink_to(saved)
        run = run_trainer("subject", str(photos["subject"]), "--scene", "lake", "--name", "x", "--library",
                          str(own_library), "--steps", "2", timeout=60)
        assert run.rc == 2, run.stderr[-2000:]
        msg = run.last("error")["message"]
        assert ("not a regular file" if kind == "fifo" else "points outside the library") in msg, msg
        (scene / which).unlink()
        shutil.move(saved, scene / which)


def test_resume_from_a_fifo_checkpoint_is_refused(tmp_path: Path, photos: dict) -> None:
    lib = tmp_path / "lib"
    ck = lib / ".checkpoints" / "r"
    ck.mkdir(parents=True)
    os.mkfifo(ck / "state.pt")
    os.mkfifo(ck / "meta.json")
    run = run_trainer("scene", str(photos["scene"]), "--name", "r", "--library", str(lib), "--steps", "2",
                      "--resolution", "16", "--threads", "1", "--resume", timeout=60)
    assert run.rc == 2, run.stderr[-2000:]
    assert "cannot be resumed" in run.last("error")["message"]
    assert "not a regular file" in run.last("error")["message"]
