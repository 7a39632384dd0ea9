"""The sd backbone, end to end on the tiny random SD checkpoint (`python -m pie_trainer.sd.tiny`):
both stages train for real (a few steps, 32 px), export, verify and write schema-valid bundles;
the graphs match PyTorch; the tokenizer matches the base's; nothing touches the network."""

from __future__ import annotations

import hashlib
import json
import os
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
    assert "single-file checkpoint" in scene(str(f)).last("error")["message"]
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

