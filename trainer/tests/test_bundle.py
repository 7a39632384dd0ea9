"""The bundles of the session's Stage I and Stage II runs honour the contract."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from conftest import RES, Run, bundle_problems, visible_entries
from PIL import Image

from pie_trainer.pixel.weights import load_weights


def manifest(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def test_scene_bundle_validates(scene_bundle: Path, scene_run: Run) -> None:
    assert bundle_problems(scene_bundle) == []
    m = manifest(scene_bundle)
    assert m["stage"] == 1 and m["parent"] is None and m["backbone"] == "pixel-unet"
    assert m["model"]["resolution"] == RES and m["model"]["scene_short_side"] == 2 * RES
    (c,) = m["tokens"]["concepts"]
    assert c["id"] == 1 and c["role"] == "scene" and m["tokens"]["null"] == 0
    assert {f["path"] for f in m["files"]} >= {"denoiser.onnx", "weights.pt", "scene.png", "preview.png"}
    # The stream: benchmark, start, train, progress..., export, verify, write, done; a preview at step 150.
    kinds = [e["event"] for e in scene_run.events]
    assert kinds[0] == "phase" and scene_run.events[0]["phase"] == "benchmark"
    assert "start" in kinds and kinds[-1] == "done"
    phases = [e["phase"] for e in scene_run.events if e["event"] == "phase"]
    assert phases == ["benchmark", "train", "export", "verify", "write"]
    progress = [e for e in scene_run.events if e["event"] == "progress"]
    assert progress[-1]["step"] == progress[-1]["total"] == m["training"]["steps"]
    preview = scene_run.last("preview")
    assert preview["step"] == 150 and Path(preview["path"]).is_file()
    assert scene_run.last("done")["bundle"] == str(scene_bundle)


def test_subject_bundle_validates(subject_bundle: Path, scene_bundle: Path, photos: dict) -> None:
    assert bundle_problems(subject_bundle) == []
    m = manifest(subject_bundle)
    assert m["stage"] == 2
    assert m["parent"] == {"name": "lake",
                           "manifest_sha256": hashlib.sha256((scene_bundle / "bundle.json").read_bytes()).hexdigest()}
    scene_c, subj_c = m["tokens"]["concepts"]
    assert scene_c == manifest(scene_bundle)["tokens"]["concepts"][0]
    assert subj_c["id"] == 2 and subj_c["role"] == "subject" and subj_c["stage"] == 2
    assert subj_c["identifier"] != scene_c["identifier"]
    assert subj_c["source_sha256"] == hashlib.sha256(Path(photos["subject"]).read_bytes()).hexdigest()
    assert m["subject"] == {"file": "subject.png", "has_mask": True}
    cut = Image.open(subject_bundle / "subject.png")
    assert cut.mode == "RGBA"
    alpha = np.asarray(cut.getchannel("A"))
    assert alpha.min() == 0 and alpha.max() == 255   # the mask is the alpha


def test_onnx_matches_pytorch(scene_bundle: Path, subject_bundle: Path) -> None:
    for folder in (scene_bundle, subject_bundle):
        model, _ = load_weights(folder / "weights.pt")
        sess = ort.InferenceSession(str(folder / "denoiser.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["x", "t", "token"]
        rng = np.random.default_rng(1)
        for n, h, w in ((2, 32, 32), (1, 24, 40), (3, 48, 64)):  # dynamic batch, height, width
            x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
            t = rng.integers(0, 1000, n).astype(np.int64)
            tok = rng.integers(0, 3, n).astype(np.int64)
            with torch.no_grad():
                ref = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(tok)).numpy()
            got = sess.run(["eps"], {"x": x, "t": t, "token": tok})[0]
            assert np.abs(got - ref).max() < 1e-3


def test_only_bundles_are_visible(library: Path, subject_bundle: Path) -> None:
    # Partial folders never outlive a run; checkpoints keep weights and previews only.
    assert [p.name for p in visible_entries(library)] == ["backpack", "lake"]
    assert not [p for p in library.iterdir() if p.name.startswith(".partial-")]
    ck = library / ".checkpoints" / "lake"
    assert (ck / "weights.pt").is_file() and not (ck / "state.pt").exists()


def test_sample_command(subject_bundle: Path, tmp_path: Path) -> None:
    from conftest import run_trainer
    out, npy = tmp_path / "s.png", tmp_path / "s.npy"
    run = run_trainer("sample", "--bundle", str(subject_bundle), "--token", "subject", "--count", "2",
                      "--height", "24", "--width", "40", "--steps", "5", "--out", str(out), "--npy", str(npy),
                      "--threads", "1")
    assert run.rc == 0 and run.events == [], run.stderr[-2000:]
    x = np.load(npy)
    assert x.shape == (2, 3, 24, 40) and x.dtype == np.float32 and np.abs(x).max() <= 1
    assert Image.open(out).size == (80, 24)


def test_bundle_files_get_the_umask_mode(scene_bundle: Path, tmp_path: Path) -> None:
    """A file written owner-only (as safetensors and ONNX external data are) is readable like
    the rest of the bundle once it is in place: a library shared with another account works."""
    import os

    from pie_trainer.core.bundle import Staging

    src = manifest(scene_bundle)
    staging = Staging(tmp_path, "modes")
    with staging:
        for e in src["files"]:
            data = (scene_bundle / e["path"]).read_bytes()
            p = staging.file(e["path"])
            p.write_bytes(data)
            os.chmod(p, 0o600)
        out = staging.commit({k: v for k, v in src.items() if k != "files"} | {"name": "modes"},
                             [e["path"] for e in src["files"]], force=False)
    umask = os.umask(0)
    os.umask(umask)
    for e in src["files"]:
        assert (out / e["path"]).stat().st_mode & 0o777 == 0o666 & ~umask, e["path"]


def test_int8_twin_is_written_only_within_its_tolerance(scene_bundle: Path, subject_bundle: Path) -> None:
    from pie_trainer.pixel.quantize import TOLERANCE

    for folder in (scene_bundle, subject_bundle):
        m = manifest(folder)
        record = m["training"]["int8"]
        assert "skipped" not in record, record
        q = m["graphs"].get("denoiser_int8")
        if record["rel_rms_diff"] > TOLERANCE:
            assert q is None and not (folder / "denoiser.int8.onnx").exists()
            continue
        assert q is not None and q["quantization"] == record and q["file"] == "denoiser.int8.onnx"
        assert q["quantization"]["fp32"] == ["/in_conv/Conv", "/out_conv/Conv"]
        assert "denoiser.int8.onnx" in {f["path"] for f in m["files"]}
        ops = {n.op_type for n in __import__("onnx").load(str(folder / "denoiser.int8.onnx")).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
        f = ort.InferenceSession(str(folder / "denoiser.onnx"), providers=["CPUExecutionProvider"])
        i8 = ort.InferenceSession(str(folder / "denoiser.int8.onnx"), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(2)
        feed = {"x": rng.standard_normal((3, 3, 24, 40)).astype(np.float32), "t": np.full(3, 150, np.int64),
                "token": np.array([2, 1, 0], np.int64)}
        a, b = f.run(["eps"], feed)[0], i8.run(["eps"], feed)[0]
        assert a.shape == b.shape and np.isfinite(b).all()
