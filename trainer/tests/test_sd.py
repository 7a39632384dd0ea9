"""The sd backbone, end to end on the tiny random SD checkpoint (`python -m pie_trainer.sd.tiny`):
both stages train for real (a few steps, 32 px), export, verify and write schema-valid bundles;
the graphs match PyTorch; the tokenizer matches the base's; nothing touches the network."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import Run, bundle_problems, env, parse_stream, visible_entries
from PIL import Image

RES = "32"
NET_BLOCK = '''
import os, socket
_log = os.environ["PIE_TEST_NET_LOG"]
def _blocked(*args, **kwargs):
    with open(_log, "a") as f:
        f.write(repr(args[:2]) + "\\n")
    raise OSError("network access blocked by the test")
socket.getaddrinfo = _blocked
socket.create_connection = _blocked
socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
'''


def net_env(tmp: Path) -> tuple[dict[str, str], Path]:
    """The trainer's environment with every DNS lookup and connect logged and refused."""
    d = tmp / "netblock"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(NET_BLOCK)
    log = d / "attempts.log"
    e = env()
    e["PYTHONPATH"] = str(d) + os.pathsep + e["PYTHONPATH"]
    e["PIE_TEST_NET_LOG"] = str(log)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        e.pop(k, None)   # the trainer must set them itself
    return e, log


def sd_run(*args: str, e: dict[str, str] | None = None, timeout: float = 600) -> Run:
    p = subprocess.run([sys.executable, "-m", "pie_trainer", *args], capture_output=True, text=True,
                       env=e or env(), timeout=timeout)
    return Run(p.returncode, parse_stream(p.stdout), p.stderr)


def make_tiny(out: Path, *extra: str) -> Path:
    subprocess.run([sys.executable, "-m", "pie_trainer.sd.tiny", str(out), *extra], check=True, env=env(),
                   capture_output=True, timeout=300)
    return out


def manifest(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("sd") / "tiny")


@pytest.fixture(scope="module")
def sd_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdlib")


@pytest.fixture(scope="module")
def sd_scene(tiny: Path, sd_lib: Path, photos: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """Stage I with the network blocked (any attempt is logged): LoRA, default mixed precision."""
    e, log = net_env(tmp_path_factory.mktemp("net"))
    run = sd_run("scene", str(photos["scene"]), "--name", "lake", "--library", str(sd_lib), "--backbone", "sd",
                 "--base", str(tiny), "--steps", "3", "--resolution", RES, "--lr", "1e-2", "--threads", "1", e=e)
    assert run.rc == 0, run.stderr[-3000:]
    assert not log.exists(), f"network attempts: {log.read_text()}"
    return run, sd_lib / "lake"


@pytest.fixture(scope="module")
def sd_subject(sd_scene: tuple[Run, Path], sd_lib: Path, photos: dict) -> tuple[Run, Path]:
    """Stage II: the backbone and base come from the scene bundle; a mask; class word 'backpack'."""
    run = sd_run("subject", str(photos["subject"]), "--scene", "lake", "--name", "backpack", "--mask",
                 str(photos["mask"]), "--class-word", "backpack", "--library", str(sd_lib), "--steps", "3",
                 "--lr", "1e-2", "--threads", "1", "--mixed-precision", "no")
    assert run.rc == 0, run.stderr[-3000:]
    return run, sd_lib / "backpack"


# ---- the tiny checkpoint ------------------------------------------------------

def test_tiny_checkpoint_is_diffusers_layout_and_deterministic(tiny: Path, tmp_path: Path) -> None:
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny / part).is_dir()
    index = json.loads((tiny / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    again = make_tiny(tmp_path / "again")
    for f in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
              "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert (tiny / f).read_bytes() == (again / f).read_bytes(), f


# ---- Stage I and Stage II bundles ---------------------------------------------

def test_sd_scene_bundle(sd_scene: tuple[Run, Path], tiny: Path) -> None:
    run, folder = sd_scene
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["backbone"] == "sd" and m["stage"] == 1 and m["parent"] is None
    assert {f["path"] for f in m["files"]} == {"text_encoder.onnx", "unet.onnx", "vae_encoder.onnx",
                                              "vae_decoder.onnx", "tokenizer.json", "weights.safetensors",
                                              "scene.png", "preview.png"}
    assert m["preview"] == "preview.png" and Image.open(folder / "preview.png").size == (64, 32)  # 2 samples
    (c,) = m["tokens"]["concepts"]
    assert c["role"] == "scene" and c["class_word"] == "scene"
    assert c["prompt"] == f"a photo of {c['identifier']} scene" == m["text"]["prompts"]["scene"]
    assert m["model"] | {"base": None} == {
        "resolution": 32, "size_multiple": 4, "min_size": 4, "channels": 3, "value_range": [-1, 1],
        "latent_channels": 4, "vae_scale_factor": 2, "scaling_factor": 0.18215, "unet_in_channels": 4,
        "precision": "float32", "base": None}
    assert m["model"]["base"]["path"] == str(tiny.resolve())
    assert m["schedule"] == {"type": "ddpm", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
                             "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
                             "steps_offset": 1, "timestep_spacing": "leading"}   # the tiny config names it
    t = m["text"]
    assert (t["max_length"], t["hidden_size"]) == (77, 32)
    assert t["bos_id"] != t["eos_id"] and t["pad_id"] == t["eos_id"]
    kinds = [e["event"] for e in run.events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert [e["phase"] for e in run.events if e["event"] == "phase"] == ["train", "export", "verify", "write"]
    assert run.last("progress")["step"] == 3 == run.last("progress")["total"]
    assert run.last("start")["precision"] in ("bf16", "no")
    assert not (folder.parent / ".checkpoints" / "lake" / "state.pt").exists()


def test_sd_subject_bundle(sd_subject: tuple[Run, Path], sd_scene: tuple[Run, Path], photos: dict) -> None:
    _, folder = sd_subject
    _, scene = sd_scene
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["stage"] == 2 and m["backbone"] == "sd"
    assert m["parent"] == {"name": "lake",
                           "manifest_sha256": hashlib.sha256((scene / "bundle.json").read_bytes()).hexdigest()}
    scene_c, subj = m["tokens"]["concepts"]
    assert scene_c == manifest(scene)["tokens"]["concepts"][0]
    assert subj["role"] == "subject" and subj["class_word"] == "backpack"
    assert subj["identifier"] != scene_c["identifier"]
    assert subj["prompt"] == f"a photo of {subj['identifier']} backpack"
    assert m["text"]["prompts"] == {"add": f"a photo of {subj['identifier']} backpack in {scene_c['identifier']} scene",
                                    "scene": scene_c["prompt"], "negative": ""}
    assert subj["source_sha256"] == hashlib.sha256(Path(photos["subject"]).read_bytes()).hexdigest()
    assert m["subject"] == {"file": "subject.png", "has_mask": True}
    alpha = np.asarray(Image.open(folder / "subject.png").getchannel("A"))
    assert alpha.min() == 0 and alpha.max() == 255
    assert m["model"]["base"] == manifest(scene)["model"]["base"]
    assert m["training"]["prior_loss_weight"] == 1.0 and m["training"]["mixed_precision"] == "no"
    assert m["model"]["base"]["name"] == "tiny"
    # Stage II continued Stage I's LoRA: same keys, other values.
    from safetensors.torch import load_file
    a, b = load_file(scene / "weights.safetensors"), load_file(folder / "weights.safetensors")
    assert a.keys() == b.keys() and all("lora_" in k for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def _feeds(name: str, rng: np.random.Generator, n: int, h: int, w: int, vocab: int) -> dict[str, np.ndarray]:
    if name == "text_encoder":
        return {"input_ids": rng.integers(0, vocab, (n, 77)).astype(np.int64)}
    if name == "unet":
        return {"sample": rng.standard_normal((n, 4, h, w)).astype(np.float32),
                "timestep": rng.integers(0, 1000, n).astype(np.int64),
                "encoder_hidden_states": rng.standard_normal((n, 77, 32)).astype(np.float32)}
    if name == "vae_encoder":
        return {"image": rng.uniform(-1, 1, (n, 3, 2 * h, 2 * w)).astype(np.float32)}
    return {"latent": rng.standard_normal((n, 4, h, w)).astype(np.float32)}


def test_subject_refuses_another_base(sd_scene: tuple[Run, Path], sd_lib: Path, photos: dict,
                                      tmp_path: Path) -> None:
    other = make_tiny(tmp_path / "tiny", "--seed", "7")      # same architecture, same sizes, other weights
    run = sd_run("subject", str(photos["subject"]), "--scene", "lake", "--name", "other", "--library", str(sd_lib),
                 "--base", str(other), "--steps", "1")
    assert run.rc == 2 and "is not the one the scene 'lake' was trained on" in run.last("error")["message"]
    assert not (sd_lib / "other").exists()


def test_sd_onnx_matches_pytorch_and_training_changed_the_unet(sd_subject: tuple[Run, Path], tiny: Path) -> None:
    from pie_trainer.sd import models as md
    from pie_trainer.sd.base import check_base
    from pie_trainer.sd.export import TextEncoder, UNet, VaeDecoder, VaeEncoder

    _, folder = sd_subject
    m = manifest(folder)
    parts, _ = md.finetuned(check_base(str(tiny)), folder / "weights.safetensors")
    base = md.load_base(check_base(str(tiny)))
    refs = {"text_encoder": TextEncoder(parts.text_encoder, torch.float32), "unet": UNet(parts.unet, torch.float32),
            "vae_encoder": VaeEncoder(parts.vae, torch.float32), "vae_decoder": VaeDecoder(parts.vae, torch.float32)}
    rng = np.random.default_rng(3)
    vocab = parts.text_encoder.config.vocab_size
    for name, ref in refs.items():
        g = m["graphs"][name]
        sess = ort.InferenceSession(str(folder / g["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == [t["name"] for t in g["inputs"]]
        assert [o.name for o in sess.get_outputs()] == [t["name"] for t in g["outputs"]]
        for n, h, w in ((1, 8, 8), (3, 12, 20)):      # dynamic batch and latent sizes, non-square
            feeds = _feeds(name, rng, n, h, w, vocab)
            got = sess.run(None, feeds)[0]
            with torch.no_grad():
                want = ref(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
            assert got.dtype == np.float32 and got.shape == want.shape
            assert np.abs(got - want).max() < 1e-3 * max(1.0, np.abs(want).max()), name
    # vae_encoder = posterior mean x scaling_factor; vae_decoder divides first.
    img = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 16, 24)).astype(np.float32))
    with torch.no_grad():
        mean = parts.vae.encode(img).latent_dist.mean
        lat = refs["vae_encoder"](img)
        assert torch.allclose(lat, mean * 0.18215, atol=1e-6)
        assert torch.allclose(refs["vae_decoder"](lat), parts.vae.decode(mean).sample, atol=1e-5)
        # The fine-tuned UNet is not the base one (LoRA merged into the export).
        f = _feeds("unet", rng, 1, 8, 8, vocab)
        args = [torch.from_numpy(v) for v in f.values()]
        assert (refs["unet"](*args) - UNet(base.unet, torch.float32)(*args)).abs().max() > 1e-4


def test_bundle_alone_samples_like_diffusers(sd_subject: tuple[Run, Path], tiny: Path, tmp_path: Path) -> None:
    """Text-to-image from the bundle's files only (ONNX Runtime, tokenizer.json, manifest schedule) equals
    diffusers' StableDiffusionPipeline on base + weights.safetensors, same prompt and noise."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from pie_trainer.sd import models as md
    from pie_trainer.sd.base import check_base
    from pie_trainer.sd.sample import Bundle

    _, folder = sd_subject
    b = Bundle(folder)
    noise = np.random.default_rng(5).standard_normal((2, 4, 16, 24)).astype(np.float32)
    ours = b.txt2img(b.m["text"]["prompts"]["add"], noise, steps=6, guidance=4.0)
    parts, _ = md.finetuned(check_base(str(tiny)), folder / "weights.safetensors")
    s = b.m["schedule"]
    sched = DDIMScheduler(num_train_timesteps=s["num_train_timesteps"], beta_start=s["beta_start"],
                          beta_end=s["beta_end"], beta_schedule=s["beta_schedule"],
                          prediction_type=s["prediction_type"], steps_offset=s["steps_offset"], clip_sample=False,
                          set_alpha_to_one=False, timestep_spacing="leading")
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    want = pipe([b.m["text"]["prompts"]["add"]] * 2, negative_prompt=[""] * 2, height=32, width=48,
                num_inference_steps=6, guidance_scale=4.0, latents=torch.from_numpy(noise), output_type="np").images
    got = np.clip(ours / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    assert got.shape == want.shape == (2, 32, 48, 3)
    assert np.abs(got - want).max() < 2e-3

    out, npy = tmp_path / "s.png", tmp_path / "s.npy"
    run = sd_run("sample", "--bundle", str(folder), "--token", "subject", "--count", "2", "--steps", "3",
                 "--height", "32", "--width", "40", "--out", str(out), "--npy", str(npy))
    assert run.rc == 0 and run.events == [], run.stderr[-2000:]
    assert Image.open(out).size == (80, 32) and np.load(npy).shape == (2, 3, 32, 40)


def test_tokenizer_json_tokenizes_like_the_base(sd_subject: tuple[Run, Path], tiny: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer

    _, folder = sd_subject
    t = manifest(folder)["text"]
    fast = Tokenizer.from_file(str(folder / t["tokenizer"]))
    base = CLIPTokenizer.from_pretrained(str(tiny / "tokenizer"))
    L = t["max_length"]
    raw = json.loads((folder / t["tokenizer"]).read_text())
    assert raw["padding"] is None and raw["truncation"] is None   # the engine pads and truncates itself
    concepts = manifest(folder)["tokens"]["concepts"]
    texts = [t["prompts"]["add"], t["prompts"]["scene"], t["prompts"]["negative"], "A Photo  of QBZ dog!",
             " ".join(c["identifier"] for c in concepts) + " word " * 60]
    for text in texts:
        # The engine's recipe (schema/README.md): no special tokens, L-2 ids, bos + ids + eos, pad to L.
        ids = fast.encode(text, add_special_tokens=False).ids[: L - 2]
        engine = [t["bos_id"], *ids, t["eos_id"]] + [t["pad_id"]] * (L - 2 - len(ids))
        want = base(text, padding="max_length", max_length=L, truncation=True).input_ids
        assert engine == want, text
    for c in concepts:
        assert fast.encode(c["identifier"], add_special_tokens=False).ids == \
            base(c["identifier"], add_special_tokens=False).input_ids


def test_same_seed_same_weights(sd_scene: tuple[Run, Path], tiny: Path, photos: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    run = sd_run("scene", str(photos["scene"]), "--name", "again", "--library", str(tmp_path), "--backbone", "sd",
                 "--base", str(tiny), "--steps", "3", "--resolution", RES, "--lr", "1e-2", "--threads", "1")
    assert run.rc == 0, run.stderr[-3000:]
    a, b = load_file(sd_scene[1] / "weights.safetensors"), load_file(tmp_path / "again" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- variants -----------------------------------------------------------------

def test_inpainting_full_finetune_with_text_encoder(tmp_path: Path, photos: dict) -> None:
    tiny9 = make_tiny(tmp_path / "tiny9", "--inpainting")
    lib = tmp_path / "lib"
    run = sd_run("scene", str(photos["scene"]), "--name", "room", "--library", str(lib), "--backbone", "sd",
                 "--base", str(tiny9), "--steps", "2", "--resolution", RES, "--lora-rank", "0",
                 "--train-text-encoder", "--mixed-precision", "no", "--gradient-accumulation-steps", "2",
                 "--gradient-checkpointing", "--threads", "1")
    assert run.rc == 0, run.stderr[-3000:]
    folder = lib / "room"
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["model"]["unet_in_channels"] == 9
    assert m["graphs"]["unet"]["inputs"][0]["shape"] == ["N", 9, "h", "w"]
    sess = ort.InferenceSession(str(folder / "unet.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"sample": np.zeros((2, 9, 8, 12), np.float32), "timestep": np.array([1, 999]),
                          "encoder_hidden_states": np.zeros((2, 77, 32), np.float32)})[0]
    assert out.shape == (2, 4, 8, 12)
    from safetensors.torch import load_file
    w = load_file(folder / "weights.safetensors")
    assert not any("lora_" in k for k in w)
    assert any(k.startswith("text_encoder.") for k in w) and any(k.startswith("unet.conv_in") for k in w)
    assert m["training"]["lora_rank"] == 0 and m["training"]["train_text_encoder"] is True

    # A subject continues the scene's full fine-tuning; another LoRA rank is refused.
    bad = sd_run("subject", str(photos["subject"]), "--scene", "room", "--name", "x", "--library", str(lib),
                 "--steps", "1", "--lora-rank", "4")
    assert bad.rc == 2 and "--lora-rank 0" in bad.last("error")["message"]
    sub = sd_run("subject", str(photos["subject"]), "--scene", "room", "--name", "toy", "--library", str(lib),
                 "--steps", "1", "--batch", "2", "--mixed-precision", "no", "--threads", "1")
    assert sub.rc == 0, sub.stderr[-3000:]
    assert bundle_problems(lib / "toy") == []
    sm = manifest(lib / "toy")
    assert sm["model"]["unet_in_channels"] == 9 and sm["training"]["train_text_encoder"] is True


def test_fp16_export_and_text_encoder_lora(tiny: Path, photos: dict, tmp_path: Path) -> None:
    """fp16 graphs (normally exported on CUDA; traced on the CPU here) take and give float32."""
    import onnx
    run = sd_run("scene", str(photos["scene"]), "--name", "half", "--library", str(tmp_path), "--backbone", "sd",
                 "--base", str(tiny), "--steps", "1", "--resolution", RES, "--export-precision", "fp16",
                 "--train-text-encoder", "--gradient-checkpointing", "--lr", "1e-2", "--threads", "1",
                 "--preview-steps", "0")
    assert run.rc == 0, run.stderr[-3000:]
    folder = tmp_path / "half"
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["model"]["precision"] == "float16"
    assert "preview" not in m and not (folder / "preview.png").exists()
    for name, g in m["graphs"].items():
        proto = onnx.load(str(folder / g["file"]))
        io = {v.name: v.type.tensor_type.elem_type for v in list(proto.graph.input) + list(proto.graph.output)}
        assert io == {t["name"]: (onnx.TensorProto.INT64 if t["dtype"] == "int64" else onnx.TensorProto.FLOAT)
                      for t in g["inputs"] + g["outputs"]}, name
        kinds = {t.data_type for t in proto.graph.initializer if len(t.dims) >= 2}
        assert kinds == {onnx.TensorProto.FLOAT16}, (name, kinds)
    assert all(isinstance(v, float) for v in m["training"]["onnx_max_abs_diff"].values())
    # LoRA on the text encoder learnt through gradient checkpointing (its B matrices start at 0).
    from safetensors.torch import load_file
    w = load_file(folder / "weights.safetensors")
    te_b = [v for k, v in w.items() if k.startswith("text_encoder.") and "lora_B" in k]
    assert te_b and all(float(v.abs().max()) > 0 for v in te_b)


def test_large_graph_keeps_its_weights_in_one_data_file(tiny: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from pie_trainer.sd import export as ex
    from pie_trainer.sd import models as md
    from pie_trainer.sd.base import check_base

    monkeypatch.setattr(ex, "EXTERNAL_LIMIT", 1000)   # stands in for a > 2 GB UNet
    parts = md.load_base(check_base(str(tiny)))
    made = ex.export_graph("unet", parts, tmp_path, 77, 4, 2, torch.device("cpu"), torch.float32)
    assert made == ["unet.onnx", "unet.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == made       # no temporary files left
    assert 5 * (tmp_path / "unet.onnx").stat().st_size < (tmp_path / "unet.onnx.data").stat().st_size
    files = {"unet": "unet.onnx"}
    for g in ("text_encoder", "vae_encoder", "vae_decoder"):
        files[g] = ex.export_graph(g, parts, tmp_path, 77, 4, 2, torch.device("cpu"), torch.float32)[0]
    report = ex.verify(parts, tmp_path, files, 77, 4, 2, 1, "float32")
    assert report["unet"] < 1e-3


# ---- graphs fused for CUDA (--optimize) -------------------------------------------

# SD's UNet layout at a small size: GroupNorm with SD's 32 groups, a cross-attention down block
# and up block around the mid block's, and two head counts (2 and 4, head size 32 each, as
# SD 2.x's per-block heads) so each attention's head count is read from its own subgraph.
FUSED_UNET = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                  attention_head_dim=(2, 4), norm_num_groups=32)


def _transformer_heads(cfg: dict) -> list[int]:
    """The head count of every transformer block the config makes: a cross-attention down block
    has layers_per_block of them, its up block one more, the mid block one (at the last heads)."""
    heads, L = cfg["attention_head_dim"], cfg["layers_per_block"]
    down = [heads[i] for i, t in enumerate(cfg["down_block_types"]) if t.startswith("CrossAttn") for _ in range(L)]
    up_heads = list(reversed(heads))
    up = [up_heads[i] for i, t in enumerate(cfg["up_block_types"]) if t.startswith("CrossAttn") for _ in range(L + 1)]
    return down + [heads[-1]] + up


def test_optimized_unet_has_the_fused_kernels_its_architecture_implies(tmp_path: Path) -> None:
    from collections import Counter
    from types import SimpleNamespace

    from diffusers import UNet2DConditionModel

    import onnx
    from pie_trainer.sd import export as ex
    from pie_trainer.sd import optimize as opt

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**FUSED_UNET).eval()
    made = ex.export_graph("unet", SimpleNamespace(unet=unet), tmp_path, 77, 4, 2, torch.device("cpu"),
                           torch.float32)
    plain = onnx.load(str(tmp_path / made[0]))
    plain_io = [(v.name, v.type.tensor_type.elem_type) for v in list(plain.graph.input) + list(plain.graph.output)]
    assert not [n for n in plain.graph.node if n.domain == opt.CONTRIB]
    made, counts = opt.optimize_graph(tmp_path, "unet", made, ex.EXTERNAL_LIMIT)
    assert made == ["unet.onnx"] and sorted(p.name for p in tmp_path.iterdir()) == made
    fused = onnx.load(str(tmp_path / "unet.onnx"))
    onnx.checker.check_model(fused)
    assert counts == opt.fused_counts(fused)

    heads = _transformer_heads(FUSED_UNET)
    modules = Counter(type(m).__name__ for m in unet.modules())
    assert modules["BasicTransformerBlock"] == len(heads) == 4   # the formula and the model agree
    T = len(heads)
    # Every attention (self and cross, per transformer block) is one MultiHeadAttention: self with
    # Q, K and V packed into one input, cross with K and V packed (Q apart).
    mha = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    assert counts["MultiHeadAttention"] == modules["Attention"] == 2 * T
    assert sorted(len(n.input) for n in mha) == [1] * T + [2] * T
    got_heads = sorted(next(a.i for a in n.attribute if a.name == "num_heads") for n in mha)
    assert got_heads == sorted(heads * 2)
    # Every GroupNorm, with its SiLU where one follows, fused (SkipGroupNorm: with the residual Add before).
    assert counts["GroupNorm"] + counts["SkipGroupNorm"] == modules["GroupNorm"]
    assert counts["SkipGroupNorm"] >= modules["ResnetBlock2D"]   # each resnet's norm2 follows the time Add
    assert not [n for n in fused.graph.node if n.op_type == "InstanceNormalization"]
    assert counts["BiasSplitGelu"] == modules["GEGLU"] == T       # the feed-forward's GEGLU
    assert counts["NhwcConv"] == modules["Conv2d"]                  # every convolution, channels last
    assert not [n for n in fused.graph.node if n.op_type == "Conv"]
    assert counts["SkipLayerNormalization"] == 2 * T               # norm2, norm3 after each attention's residual
    assert counts["BiasAdd"] >= 1
    assert len(fused.graph.node) < len(plain.graph.node) / 2

    # float16 inside, the contract's float32 (int64) inputs and outputs kept.
    assert [(v.name, v.type.tensor_type.elem_type) for v in list(fused.graph.input) + list(fused.graph.output)] \
        == plain_io
    big = {t.data_type for t in fused.graph.initializer if len(t.dims) >= 2}
    assert big == {onnx.TensorProto.FLOAT16}
    # The sinusoidal timestep embedding stays float32, as diffusers computes it.
    kept = set(opt._timestep_nodes(fused))
    sin = [n for n in fused.graph.node if n.op_type in ("Sin", "Cos")]
    assert len(sin) == 2 and all(n.name in kept for n in sin)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(fused).graph.value_info}
    assert all(types.get(n.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for n in sin)


FUSED_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(64, 128), layers_per_block=1,
                 latent_channels=4, norm_num_groups=32, sample_size=32)


def test_optimized_vae_has_the_fused_kernels_its_architecture_implies(tmp_path: Path) -> None:
    from collections import Counter
    from types import SimpleNamespace

    from diffusers import AutoencoderKL

    import onnx
    from pie_trainer.sd import export as ex
    from pie_trainer.sd import optimize as opt

    torch.manual_seed(0)
    vae = AutoencoderKL(**FUSED_VAE).eval()
    opt.export_for_fusion(SimpleNamespace(vae=vae))
    for graph, parts in (("vae_encoder", (vae.encoder, vae.quant_conv)), ("vae_decoder", (vae.post_quant_conv,
                                                                                          vae.decoder))):
        made = ex.export_graph(graph, SimpleNamespace(vae=vae), tmp_path, 77, 4, 2, torch.device("cpu"),
                               torch.float32)
        made, counts = opt.optimize_graph(tmp_path, graph, made, ex.EXTERNAL_LIMIT)
        proto = onnx.load(str(tmp_path / made[0]))
        onnx.checker.check_model(proto)
        modules = Counter(type(m).__name__ for p in parts for m in p.modules())
        assert counts["Attention"] == modules["Attention"] == 1, graph      # the mid block's
        # Every GroupNorm but the attention's own, which runs on [N, C, H*W], a rank the fusion does not take.
        assert counts["GroupNorm"] + counts.get("SkipGroupNorm", 0) == modules["GroupNorm"] - modules["Attention"], \
            graph
        assert counts["NhwcConv"] == modules["Conv2d"], graph
        assert not [n for n in proto.graph.node if n.op_type in ("Conv", "Softmax")], graph
        assert len([n for n in proto.graph.node if n.op_type == "InstanceNormalization"]) == 1, graph
        io = [(v.name, v.type.tensor_type.elem_type) for v in list(proto.graph.input) + list(proto.graph.output)]
        assert io == ([("image", onnx.TensorProto.FLOAT), ("latent", onnx.TensorProto.FLOAT)][::1 if graph ==
                      "vae_encoder" else -1]), graph


def test_optimize_on_makes_a_cuda_only_bundle_the_engine_accepts(tiny: Path, photos: dict, tmp_path: Path) -> None:
    """--optimize on with a float16 export traced here: every graph fused, recorded in bundle.json,
    float32 I/O kept; the CPU cannot run them, so the check is of their interface and no preview."""
    import onnx
    run = sd_run("scene", str(photos["scene"]), "--name", "fused", "--library", str(tmp_path), "--backbone", "sd",
                 "--base", str(tiny), "--steps", "1", "--resolution", RES, "--export-precision", "fp16",
                 "--optimize", "on", "--threads", "1")
    assert run.rc == 0, run.stderr[-3000:]
    folder = tmp_path / "fused"
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["model"]["precision"] == "float16"
    assert m["model"]["optimized"] == {"by": "onnxruntime-transformers", "version": ort.__version__,
                                       "graphs": ["text_encoder", "unet", "vae_encoder", "vae_decoder"]}
    fused = m["training"]["fused_operators"]
    assert m["training"]["optimize"] == "on"
    assert fused["unet"]["MultiHeadAttention"] == 8 and fused["unet"]["BiasSplitGelu"] == 4    # tiny: 4 blocks
    assert fused["vae_decoder"]["NhwcConv"] > 0 and fused["text_encoder"]["SkipLayerNormalization"] == 4
    assert fused["vae_encoder"]["Attention"] == fused["vae_decoder"]["Attention"] == 1
    assert "preview" not in m and "no preview.png" in run.stderr
    for name, g in m["graphs"].items():
        proto = onnx.load(str(folder / g["file"]))
        onnx.checker.check_model(proto)
        assert {n.op_type for n in proto.graph.node if n.domain == "com.microsoft"} == set(fused[name]), name
        io = [(v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim))
              for v in list(proto.graph.input) + list(proto.graph.output)]
        assert io == [(t["name"], onnx.TensorProto.INT64 if t["dtype"] == "int64" else onnx.TensorProto.FLOAT,
                       len(t["shape"])) for t in g["inputs"] + g["outputs"]], name
    # The engine's own validation, where it is built (tests/run.sh builds it before this suite).
    pie = Path(__file__).resolve().parents[2] / "target" / "release" / "pie"
    if pie.is_file():
        show = subprocess.run([str(pie), "--library", str(tmp_path), "concepts", "show", "fused"],
                              capture_output=True, text=True, timeout=60, env={**env(), "PIE_HOME": str(tmp_path)})
        assert show.returncode == 0, show.stdout + show.stderr
        assert "graphs fused by onnxruntime-transformers" in show.stdout + show.stderr


# ---- refusals -----------------------------------------------------------------

def test_hub_id_and_bad_bases_are_refused_without_network(tmp_path: Path, photos: dict, tiny: Path) -> None:
    e, log = net_env(tmp_path)
    lib = tmp_path / "lib"

    def scene(base: str, *extra: str) -> Run:
        return sd_run("scene", str(photos["scene"]), "--name", "n", "--library", str(lib), "--backbone", "sd",
                      "--base", base, "--steps", "1", "--resolution", RES, *extra, e=e, timeout=60)

    t0 = time.monotonic()
    run = scene("runwayml/stable-diffusion-v1-5")
    assert run.rc == 2 and "hub id" in run.last("error")["message"]
    assert time.monotonic() - t0 < 30 and not log.exists()
    no_vae = tmp_path / "novae"
    no_vae.mkdir()
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
        (no_vae / part).symlink_to(tiny / part)
    (no_vae / "model_index.json").write_text((tiny / "model_index.json").read_text())
    run = scene(str(no_vae))
    assert run.rc == 2 and "no vae/ folder" in run.last("error")["message"]
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    assert "is not a safetensors file (too short)" in scene(str(f)).last("error")["message"]
    assert "does not exist" in scene(str(tmp_path / "nowhere")).last("error")["message"]
    assert "multiple of 4" in scene(str(tiny), "--resolution", "30").last("error")["message"]
    assert "--class-word" in scene(str(tiny), "--class-word", "Dog!").last("error")["message"]
    assert "bitsandbytes" in scene(str(tiny), "--use-8bit-adam").last("error")["message"]
    assert "does not use --channels" in scene(str(tiny), "--channels", "16").last("error")["message"]
    # Fused graphs run on CUDA only: never made from a float32 export (the one the CPU runs).
    for extra in (("--optimize", "on"), ("--optimize", "on", "--export-precision", "fp32")):
        run = scene(str(tiny), *extra)
        assert run.rc == 2 and "--optimize on fuses the graphs into ONNX Runtime operators that run on CUDA " \
            "only" in run.last("error")["message"] and "--export-precision fp16" in run.last("error")["message"]
        assert not [e for e in run.events if e["event"] == "progress"], extra
    assert "needs --base" in sd_run("scene", str(photos["scene"]), "--name", "n", "--library", str(lib),
                                    "--backbone", "sd", e=e).last("error")["message"]
    pixel = sd_run("scene", str(photos["scene"]), "--name", "n", "--library", str(lib), "--lora-rank", "4", e=e)
    assert pixel.rc == 2 and "--lora-rank needs --backbone sd" in pixel.last("error")["message"]
    assert not log.exists(), log.read_text()
    assert visible_entries(lib) == []


def test_schedule_keeps_the_base_schedulers_spacing(tiny: Path, tmp_path: Path) -> None:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from pie_trainer.core.errors import BadInput
    from pie_trainer.sd.base import check_base, schedule_manifest
    from pie_trainer.sd.sample import ddim_timesteps

    base = tmp_path / "base"
    base.mkdir()
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        (base / part).symlink_to(tiny / part)
    (base / "model_index.json").write_text((tiny / "model_index.json").read_text())
    (base / "scheduler").mkdir()
    config = json.loads((tiny / "scheduler" / "scheduler_config.json").read_text())

    def with_scheduler(**changes: object) -> dict:
        (base / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, **changes}))
        return schedule_manifest(check_base(str(base)))

    # A config that names neither: the engine keeps each scheduler's own default.
    m = with_scheduler(timestep_spacing=None)
    assert "timestep_spacing" not in m and "set_alpha_to_one" not in m
    for spacing in ("leading", "trailing", "linspace"):
        m = with_scheduler(timestep_spacing=spacing, set_alpha_to_one=True)
        assert m["timestep_spacing"] == spacing and m["set_alpha_to_one"] is True
        ref = DDIMScheduler.from_pretrained(str(base), subfolder="scheduler")
        ref.set_timesteps(10)
        assert ddim_timesteps(m, 10) == ref.timesteps.tolist(), spacing
        # what the engine's schedule.rs is checked against, for this checkpoint
        dpm = DPMSolverMultistepScheduler.from_pretrained(str(base), subfolder="scheduler")
        dpm.set_timesteps(10)
        assert dpm.config.timestep_spacing == spacing
    with pytest.raises(BadInput, match="timestep_spacing 'karras'"):
        with_scheduler(timestep_spacing="karras")


# ---- cancel and resume ----------------------------------------------------------

def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pie_trainer", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def _wait(proc: subprocess.Popen, pred: object, timeout: float = 180) -> list[dict]:
    assert proc.stdout is not None
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.extend(parse_stream(line))
        if pred(seen[-1]):  # type: ignore[operator]
            return seen
        assert time.monotonic() < deadline, "timed out"
    raise AssertionError(f"the run ended before the awaited event: {seen[-3:]}")


def _finish(proc: subprocess.Popen, seen: list[dict]) -> Run:
    out, err = proc.communicate(timeout=120)
    return Run(proc.returncode, seen + parse_stream(out), err)


def test_sd_cancel_leaves_no_bundle_and_resumes(tmp_path: Path, photos: dict, tiny: Path) -> None:
    lib = tmp_path / "lib"
    common = ["scene", str(photos["scene"]), "--name", "c", "--library", str(lib), "--backbone", "sd", "--base",
              str(tiny), "--threads", "1"]
    args = common + ["--steps", "40", "--resolution", RES, "--mixed-precision", "no"]
    proc = _start(*args)
    seen = _wait(proc, lambda e: e["event"] == "progress" and e["step"] >= 2)
    proc.send_signal(signal.SIGINT)
    run = _finish(proc, seen)
    assert run.rc == 3, run.stderr[-2000:]
    c = run.last("cancelled")
    stopped = c["step"]
    assert 2 <= stopped < 40 and Path(c["checkpoint"]) == lib / ".checkpoints" / "c"
    assert (lib / ".checkpoints" / "c" / "state.pt").is_file()
    assert visible_entries(lib) == [] and not [p for p in lib.iterdir() if p.name.startswith(".partial")]

    resumed = sd_run(*common, "--steps", "1", "--resume")  # the checkpoint's settings win
    assert resumed.rc == 0, resumed.stderr[-2000:]
    first = next(e for e in resumed.events if e["event"] == "progress")
    assert first["step"] == stopped + 1 and first["total"] == 40
    m = manifest(lib / "c")
    assert m["training"]["resumed"] is True and m["training"]["steps"] == 40
    assert bundle_problems(lib / "c") == []

    # Stopped while exporting: still no bundle and no half-written folder.
    proc = _start(*[a if a != "c" else "d" for a in args])
    seen = _wait(proc, lambda e: e.get("phase") == "export")
    proc.send_signal(signal.SIGTERM)
    run = _finish(proc, seen)
    assert run.rc == 3, run.stderr[-2000:]
    assert [p.name for p in visible_entries(lib)] == ["c"]
    assert not [p for p in lib.iterdir() if p.name.startswith(".partial")]
    # Resuming a run stopped after training exports at once, from the trained weights.
    done = sd_run(*[a if a != "c" else "d" for a in common], "--resume")
    assert done.rc == 0, done.stderr[-2000:]
    assert not [e for e in done.events if e["event"] == "progress"]
    assert bundle_problems(lib / "d") == [] and manifest(lib / "d")["training"]["steps"] == 40


def test_export_failure_keeps_the_training_for_resume(tmp_path: Path, photos: dict, tiny: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated full disk while exporting: exit 2, no bundle; the trained weights stay, --resume exports."""
    import errno
    import io

    from pie_trainer import cli
    from pie_trainer.sd import export as ex

    real = ex.export_graph

    def full(name: str, parts: object, folder: Path, *a: object) -> list[str]:
        if name == "unet":
            (folder / "unet.onnx").write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "unet.onnx"))
        return real(name, parts, folder, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(ex, "export_graph", full)
    lib = tmp_path / "lib"
    args = ["scene", str(photos["scene"]), "--name", "full", "--library", str(lib), "--backbone", "sd", "--base",
            str(tiny), "--steps", "2", "--resolution", RES, "--threads", "1", "--preview-steps", "0"]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = io.StringIO()
    try:
        rc = cli.main(args, stdout_stream=out)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    err = [e for e in parse_stream(out.getvalue()) if e["event"] == "error"][-1]
    assert rc == 2 and "disk is full" in err["message"]
    assert visible_entries(lib) == [] and not [p for p in lib.iterdir() if p.name.startswith(".partial-")]
    assert (lib / ".checkpoints" / "full" / "state.pt").is_file()

    run = sd_run(*args[:-2], "--resume")     # a fresh process: the real exporter
    assert run.rc == 0, run.stderr[-2000:]
    assert not [e for e in run.events if e["event"] == "progress"]
    assert bundle_problems(lib / "full") == []



# ---- single-file checkpoints (--base FILE.safetensors) ------------------------------

def ldm_file(folder: Path, out: Path, drop: tuple[str, ...] = (), extra: dict | None = None) -> Path:
    """The diffusers-layout checkpoint `folder` saved as ONE .safetensors file in the original (LDM) layout."""
    from ldm_layout import to_ldm
    from safetensors.torch import load_file, save_file
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    attn_up = {i for i, b in enumerate(unet_cfg["up_block_types"]) if b.startswith("CrossAttn")}
    state = to_ldm(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"),
                   load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"),
                   load_file(folder / "text_encoder" / "model.safetensors"),
                   unet_cfg["layers_per_block"], attn_up, len(vae_cfg["block_out_channels"]))
    state = {k: v.contiguous() for k, v in state.items() if not k.startswith(drop)} | (extra or {})
    save_file(state, str(out))
    return out


def cache_entries(cache: Path) -> list[str]:
    d = cache / "sd-single-file"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.fixture(scope="module")
def tiny_file(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ldm_file(tiny, tmp_path_factory.mktemp("single") / "tiny-sd.safetensors")


def test_single_file_converts_to_the_same_model(tiny: Path, tiny_file: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The converted UNet, VAE and text encoder are the folder's, weight for weight and output for output;
    the conversion is cached by fingerprint and reused; an inpainting file converts to a 9-channel UNet."""
    from pie_trainer.sd import models as md
    from pie_trainer.sd.base import check_base

    cache = tmp_path / "cache"
    monkeypatch.setenv("PIE_CACHE", str(cache))
    got = check_base(str(tiny_file))
    want = check_base(str(tiny))
    assert got.path == tiny_file.resolve() and got.name == "tiny-sd" and got.diffusers_folder.parent == \
        cache / "sd-single-file"
    assert got.unet == {**want.unet, **{k: got.unet[k] for k in got.unet if k.startswith("_")}}
    assert (got.in_channels, got.vae_scale_factor, got.native_resolution) == (4, 2, 64)
    assert got.scheduler["prediction_type"] == "epsilon" and got.variant is None
    a, b = md.load_base(got), md.load_base(want)
    for part in ("unet", "vae", "text_encoder"):
        x, y = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in y), part
    g = torch.Generator().manual_seed(0)
    lat, img = torch.randn(1, 4, 8, 8, generator=g), torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    ids = a.tokenizer("a photo of dog", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.tolist() == b.tokenizer("a photo of dog", padding="max_length", max_length=77,
                                       return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        ha, hb = a.text_encoder(ids)[0], b.text_encoder(ids)[0]
        assert torch.equal(ha, hb)
        assert torch.equal(a.unet(lat, 10, ha).sample, b.unet(lat, 10, hb).sample)
        assert torch.equal(a.vae.decode(lat).sample, b.vae.decode(lat).sample)
        assert torch.equal(a.vae.encode(img).latent_dist.mean, b.vae.encode(img).latent_dist.mean)
    assert a.scheduler.config.beta_schedule == b.scheduler.config.beta_schedule == "scaled_linear"
    # Cached: the second look converts nothing and gives the same folder.
    (entry,) = cache_entries(cache)
    stamp = (cache / "sd-single-file" / entry / "model_index.json").stat().st_mtime_ns
    assert check_base(str(tiny_file)).diffusers_folder == got.diffusers_folder
    assert (cache / "sd-single-file" / entry / "model_index.json").stat().st_mtime_ns == stamp
    index = json.loads((got.diffusers_folder / "model_index.json").read_text())
    assert index["_pie_single_file"] == {"source": str(tiny_file.resolve()), "architecture": "tiny",
                                         "fingerprint": got.fingerprint}

    tiny9 = make_tiny(tmp_path / "tiny9", "--inpainting")
    inp = check_base(str(ldm_file(tiny9, tmp_path / "inpaint.safetensors")))
    assert inp.inpainting and inp.fingerprint != got.fingerprint and len(cache_entries(cache)) == 2
    w = md.load_base(inp).unet.state_dict()
    w9 = md.load_base(check_base(str(tiny9))).unet.state_dict()
    assert all(torch.equal(w[k], w9[k]) for k in w9)


def test_single_file_base_learns_the_same_scene(sd_scene: tuple[Run, Path], tiny_file: Path, photos: dict,
                                                tmp_path: Path) -> None:
    """`scene --base FILE` with the network blocked trains what `--base DIR` trains, records the file as the
    base, and a subject finds it again (one conversion in all); another file is refused without converting."""
    from safetensors.torch import load_file
    e, log = net_env(tmp_path)
    cache = tmp_path / "cache"
    e["PIE_CACHE"] = str(cache)
    lib = tmp_path / "lib"
    run = sd_run("scene", str(photos["scene"]), "--name", "lake", "--library", str(lib), "--backbone", "sd",
                 "--base", str(tiny_file), "--steps", "3", "--resolution", RES, "--lr", "1e-2", "--threads", "1",
                 e=e)
    assert run.rc == 0, run.stderr[-3000:]
    assert not log.exists(), f"network attempts: {log.read_text()}"
    assert "converting tiny-sd.safetensors" in run.stderr
    assert bundle_problems(lib / "lake") == []
    a, b = load_file(sd_scene[1] / "weights.safetensors"), load_file(lib / "lake" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = manifest(lib / "lake")["model"]["base"]
    assert base["path"] == str(tiny_file.resolve()) and base["name"] == "tiny-sd"
    assert base["fingerprint"] != manifest(sd_scene[1])["model"]["base"]["fingerprint"]
    (entry,) = cache_entries(cache)

    sub = sd_run("subject", str(photos["subject"]), "--scene", "lake", "--name", "pack", "--library", str(lib),
                 "--steps", "1", "--threads", "1", "--preview-steps", "0", e=e)
    assert sub.rc == 0, sub.stderr[-3000:]
    assert "converting" not in sub.stderr and cache_entries(cache) == [entry]
    assert manifest(lib / "pack")["model"]["base"] == base

    other = ldm_file(make_tiny(tmp_path / "tiny7", "--seed", "7"), tmp_path / "other.safetensors")
    bad = sd_run("subject", str(photos["subject"]), "--scene", "lake", "--name", "x", "--library", str(lib),
                 "--base", str(other), "--steps", "1", e=e)
    assert bad.rc == 2 and "is not the one the scene 'lake' was trained on" in bad.last("error")["message"]
    assert cache_entries(cache) == [entry] and not (lib / "x").exists()


def test_bad_single_files_are_refused_and_nothing_is_written(tiny: Path, tiny_file: Path, tmp_path: Path,
                                                            photos: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    from pie_trainer.core.errors import BadInput
    from pie_trainer.sd.base import check_base

    cache = tmp_path / "cache"
    monkeypatch.setenv("PIE_CACHE", str(cache))
    z = torch.zeros(1)

    def refused(path: Path, message: str) -> None:
        with pytest.raises(BadInput, match=message):
            check_base(str(path))

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 not really a zip")
    refused(ckpt, r"pickle checkpoint \(\.ckpt\).*runs whatever code.*Convert it to \.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    refused(junk, "is not a safetensors file")
    save_file({"weight": z}, str(tmp_path / "lora.safetensors"))
    refused(tmp_path / "lora.safetensors",
            re.escape("has no UNet keys (model.diffusion_model.*); not a Stable Diffusion checkpoint"))
    save_file({"down_blocks.0.resnets.0.conv1.weight": z}, str(tmp_path / "unet.safetensors"))
    refused(tmp_path / "unet.safetensors", "single diffusers-layout part")
    save_file({"model.diffusion_model.joint_blocks.0.x": z}, str(tmp_path / "sd3.safetensors"))
    refused(tmp_path / "sd3.safetensors", "no model.diffusion_model.input_blocks.0.0.weight")
    refused(ldm_file(tiny, tmp_path / "novae.safetensors", drop=("first_stage_model.",)),
            re.escape("has no VAE keys (first_stage_model.*)"))
    refused(ldm_file(tiny, tmp_path / "notext.safetensors", drop=("cond_stage_model.",)),
            "has no text encoder keys")
    # Its header says SDXL (pie's tiny one): the sd backbone refuses it before converting anything.
    vocab = int(json.loads((tiny / "text_encoder" / "config.json").read_text())["vocab_size"])
    sdxl = ldm_file(tiny, tmp_path / "sdxl.safetensors", drop=("cond_stage_model.",),
                    extra={"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight":
                           torch.zeros(vocab, 32),
                           "conditioner.embedders.1.model.token_embedding.weight": torch.zeros(vocab, 48)})
    refused(sdxl, "is a Stable Diffusion XL checkpoint .*use --backbone sdxl")
    assert not cache.exists()

    # The same through the command line: exit 2, the message, no bundle, no conversion.
    e, log = net_env(tmp_path)
    e["PIE_CACHE"] = str(cache)
    lib = tmp_path / "lib"
    for f, message in ((sdxl, "use --backbone sdxl"), (ckpt, "pickle checkpoint")):
        run = sd_run("scene", str(photos["scene"]), "--name", "n", "--library", str(lib), "--backbone", "sd",
                     "--base", str(f), "--steps", "1", "--resolution", RES, e=e, timeout=120)
        assert run.rc == 2 and message in run.last("error")["message"]
    assert visible_entries(lib) == [] and not cache.exists() and not log.exists()


def _fake_header(tmp: Path, name: str, shapes: dict[str, list[int]]) -> Path:
    """A safetensors file whose header declares `shapes` (1 element of data each: identify reads the header)."""
    header = {k: {"dtype": "F16", "shape": v, "data_offsets": [2 * i, 2 * i + 2]} for i, (k, v) in
              enumerate(shapes.items())}
    raw = json.dumps(header).encode()
    f = tmp / name
    f.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0\0" * len(shapes))
    return f


def test_shipped_configs_fit_the_real_sd_layouts(tmp_path: Path) -> None:
    """Each shipped config builds (on the meta device, no memory) a model of SD's published size whose LDM
    key layout diffusers' own detection names as that model, converts back key for key, and is what pie's
    detection picks for those keys."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )
    from ldm_layout import to_ldm
    from transformers import CLIPTextConfig, CLIPTextModel

    from pie_trainer.sd import single_file as sf

    published = {"sd1": (859_520_964, 123_060_480), "sd2": (865_910_724, 340_387_840)}
    diffusers_names = {"sd1": "v1", "sd1-inpainting": "inpainting", "sd2": "v2", "sd2-v": "v2",
                       "sd2-inpainting": "inpainting_v2"}
    for name, diffusers_name in diffusers_names.items():
        folder = sf.CONFIGS / name
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        count = (sum(p.numel() for p in unet.parameters()),
                 sum(p.numel() for p in text.parameters()))
        if name in published:
            assert count == published[name], name
        assert sum(p.numel() for p in vae.parameters()) == 83_653_863
        cfg = dict(unet.config)
        attn_up = {i for i, b in enumerate(cfg["up_block_types"]) if b.startswith("CrossAttn")}
        state = to_ldm(unet.state_dict(), vae.state_dict(), {}, cfg["layers_per_block"], attn_up, 4)
        assert infer_diffusers_model_type(state) == diffusers_name
        back = convert_ldm_unet_checkpoint(state, cfg)
        assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in unet.state_dict().items()}
        back = convert_ldm_vae_checkpoint(state, dict(vae.config))
        assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in vae.state_dict().items()}
        width = text.config.hidden_size
        tokens = {sf.CLIP_TOKENS: [49408, width]} if width == 768 else {sf.OPEN_CLIP_TOKENS: [49408, width]}
        shapes = {k: list(v.shape) for k, v in state.items()} | tokens
        f = _fake_header(tmp_path, f"{name}.safetensors", shapes)
        tensors, _ = sf.read_header(f)
        assert sf.identify(f, tensors, v_prediction=None if name != "sd2" else False).name == name
        arch = sf.check(f).arch
        assert arch.name == ("sd2-v" if name == "sd2" else name)
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        assert scheduler["prediction_type"] == ("v_prediction" if name == "sd2-v" else "epsilon")
    # SD 2.x 512 (epsilon) and 768 (v) share their weights' layout: A1111's sidecar YAML tells them apart.
    f = tmp_path / "sd2.safetensors"
    assert sf.sidecar_v_prediction(f) is None
    f.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: \"v\"\n")
    assert sf.sidecar_v_prediction(f) is True and sf.check(f).arch.name == "sd2-v"
    f.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert sf.sidecar_v_prediction(f) is False and sf.check(f).arch.name == "sd2"


def test_real_sd_files_say_what_tokenizer_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CLIP's BPE vocabulary on this machine an SD 1.x file is refused, naming what would provide it;
    with CLIP's merges file (as open_clip ships it) the tokenizer is built, 49408 tokens in CLIP's order."""
    import gzip

    from pie_trainer.core.errors import BadInput
    from pie_trainer.sd import single_file as sf

    monkeypatch.setenv("PIE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sf, "BPE_PACKAGES", (("pie_no_such_package", "x.txt.gz"),))
    monkeypatch.setattr(sf, "HUB_TOKENIZERS", (("pie-test/no-such-repo", ""),))
    fake = sf.SingleFile(path=tmp_path / "v1-5.safetensors", arch=sf.Arch("sd1", "Stable Diffusion 1.x", False),
                         fingerprint="0" * 64, half=True)
    with pytest.raises(BadInput, match="needs CLIP's BPE tokenizer .*never downloads.*open_clip_torch"):
        sf.convert(fake)
    assert [p.name for p in (tmp_path / "cache" / "sd-single-file").iterdir()] == []

    merges = [f"q{i} z</w>" for i in range(48894)]
    gz = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    gz.write_bytes(gzip.compress(("\"bpe_simple_vocab_16e6.txt#version: 0.2\n" + "\n".join(merges) + "\n"
                                  + "extra merge\n" * 3).encode()))
    sf.write_clip_bpe(gz, tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["q0z</w>"] == 512
    assert (tmp_path / "merges.txt").read_text().splitlines()[1:] == merges


def test_the_clip_vocabulary_from_set_up_tokenizes_as_clip_does(tmp_path: Path) -> None:
    """build/clip-vocab.sh (part of the test command's set-up) puts CLIP's merges into pie's cache; the
    tokenizer built from them gives CLIP's own ids, so real single files can be converted offline."""
    from transformers import CLIPTokenizer

    from pie_trainer.sd import single_file as sf

    cached = sf.cache_root() / sf.BPE_CACHED
    assert cached.is_file(), f"{cached} is missing: run bash build/clip-vocab.sh"
    sf.write_clip_bpe(cached, tmp_path)
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    # CLIP ViT-L/14's ids for this prompt (bos 49406, 'a' 320, 'photo' 1125, 'of' 539, 'dog' 1929, eos 49407).
    assert tok("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert len(tok) == 49408
