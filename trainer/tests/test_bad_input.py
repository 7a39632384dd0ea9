"""Each kind of bad input gets its own message, exit code 2, an `error` event, and no bundle."""

from __future__ import annotations

import errno
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import Run, bundle_problems, parse_stream, run_trainer, visible_entries
from PIL import Image


def refused(run: Run, *words: str) -> str:
    assert run.rc == 2, run.stderr[-2000:]
    err = run.last("error")
    assert err["kind"] == "bad_input"
    for w in words:
        assert w in err["message"], err["message"]
    assert not any(e["event"] == "done" for e in run.events)
    return err["message"]


def scene_args(image: Path, lib: Path, name: str = "s", *extra: str) -> list[str]:
    return ["scene", str(image), "--name", name, "--library", str(lib), "--steps", "2", "--resolution", "16",
            "--threads", "1", "--precision", "fp32", "--preview-every", "0", *extra]


def test_missing_file(tmp_path: Path) -> None:
    refused(run_trainer(*scene_args(tmp_path / "nope.png", tmp_path / "lib")), "does not exist")
    assert visible_entries(tmp_path / "lib") == []


def test_not_an_image(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is not a picture\n")
    refused(run_trainer(*scene_args(p, tmp_path / "lib")), "not an image file")
    assert visible_entries(tmp_path / "lib") == []


def test_truncated_image(tmp_path: Path, photos: dict) -> None:
    p = tmp_path / "cut.png"
    data = Path(photos["scene"]).read_bytes()
    p.write_bytes(data[: len(data) // 3] if data[:4] == b"\x89PNG" else data[:2000])
    run = run_trainer(*scene_args(p, tmp_path / "lib"))
    refused(run)
    assert "damaged" in run.last("error")["message"] or "not an image" in run.last("error")["message"]


def test_too_small(tmp_path: Path) -> None:
    p = tmp_path / "tiny.png"
    Image.new("RGB", (40, 20), (10, 200, 30)).save(p)
    refused(run_trainer(*scene_args(p, tmp_path / "lib")), "40x20", "smallest the trainer accepts is 32x32")


def test_bad_name(tmp_path: Path, photos: dict) -> None:
    refused(run_trainer(*scene_args(photos["scene"], tmp_path / "lib", "My Scene")), "not allowed")


def test_existing_name_refused_without_force(own_library: Path, photos: dict) -> None:
    before = (own_library / "lake" / "bundle.json").read_bytes()
    refused(run_trainer(*scene_args(photos["scene"], own_library, "lake")), "already exists", "--force")
    assert (own_library / "lake" / "bundle.json").read_bytes() == before


def test_subject_scene_missing(tmp_path: Path, photos: dict) -> None:
    run = run_trainer("subject", str(photos["subject"]), "--scene", "nowhere", "--name", "x",
                      "--library", str(tmp_path))
    refused(run, "no scene bundle named 'nowhere'")


def test_subject_scene_of_another_backbone(own_library: Path, photos: dict) -> None:
    sd = own_library / "sdscene"
    shutil.copytree(own_library / "lake", sd)
    m = json.loads((sd / "bundle.json").read_text())
    m["backbone"] = "sd"
    (sd / "bundle.json").write_text(json.dumps(m))
    run = run_trainer("subject", str(photos["subject"]), "--scene", "sdscene", "--name", "x",
                      "--library", str(own_library), "--backbone", "pixel-unet")
    refused(run, "backbone 'sd'")
    # Without --backbone a subject follows its scene's backbone: this fake sd scene is not a valid sd bundle.
    run = run_trainer("subject", str(photos["subject"]), "--scene", "sdscene", "--name", "x",
                      "--library", str(own_library))
    refused(run, "'sdscene' is not a valid bundle")


def test_subject_scene_is_a_subject(subject_bundle: Path, library: Path, photos: dict) -> None:
    run = run_trainer("subject", str(photos["subject"]), "--scene", "backpack", "--name", "x",
                      "--library", str(library))
    refused(run, "is a subject", "'lake'")
    assert not (library / "x").exists()


def test_wrong_size_mask(own_library: Path, photos: dict, tmp_path: Path) -> None:
    mask = tmp_path / "mask.png"
    Image.new("L", (50, 60), 255).save(mask)
    run = run_trainer("subject", str(photos["subject"]), "--scene", "lake", "--name", "x", "--mask", str(mask),
                      "--library", str(own_library))
    refused(run, "mask", "50x60", "same size")
    assert [p.name for p in visible_entries(own_library)] == ["lake"]


def test_huge_image_is_downscaled_not_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    w, h = 6000, 4000
    Image.radial_gradient("L").resize((w, h)).convert("RGB").save(big, quality=80)
    lib = tmp_path / "lib"
    run = run_trainer(*scene_args(big, lib, "big"))
    assert run.rc == 0, run.stderr[-2000:]
    m = json.loads((lib / "big" / "bundle.json").read_text())
    assert m["tokens"]["concepts"][0]["source_size"] == [w, h]
    assert m["training"]["source_downscaled"] is True
    assert bundle_problems(lib / "big") == []


def test_disk_full_while_writing(tmp_path: Path, photos: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: the ONNX export hits ENOSPC (a real full disk needs root and a tiny filesystem)."""
    import signal

    from pie_trainer import cli
    from pie_trainer.pixel import stages

    def full(model: object, path: Path, resolution: int) -> None:
        Path(path).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(stages, "export_onnx", full)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = io.StringIO()
    lib = tmp_path / "lib"
    try:
        rc = cli.main(scene_args(photos["scene"], lib, "full"), stdout_stream=out)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    events = parse_stream(out.getvalue())
    assert rc == 2
    err = [e for e in events if e["event"] == "error"][-1]
    assert err["kind"] == "bad_input" and "disk is full" in err["message"]
    assert visible_entries(lib) == []
    assert not [p for p in lib.iterdir() if p.name.startswith(".partial-")]
