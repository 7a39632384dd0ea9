"""The sdxl backbone, end to end on the tiny random SDXL checkpoint (`python -m pie_trainer.sdxl.tiny`):
both stages train for real (a few steps, 32 px), export, verify and write bundles valid under the
sdxl contract (schema/README.md, "Backbone sdxl"); the graphs match PyTorch and diffusers' own SDXL
text encoding; the bundle alone samples like diffusers' StableDiffusionXLPipeline; the sd and sdxl
backbones each refuse the other's checkpoint, naming the right one."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import Run, bundle_problems, env, parse_stream, run_trainer, visible_entries
from PIL import Image

RES = "32"
D1, D2, P = 32, 48, 24          # the tiny checkpoint's encoder widths and pooled size (sdxl/tiny.py)
TIME_IDS = ["original_height", "original_width", "crop_top", "crop_left", "target_height", "target_width"]


def make_tiny(out: Path, *extra: str, module: str = "pie_trainer.sdxl.tiny") -> Path:
    subprocess.run([sys.executable, "-m", module, str(out), *extra], check=True, env=env(), capture_output=True,
                   timeout=300)
    return out


def manifest(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def ddim_of(s: dict) -> Any:
    """diffusers' DDIM scheduler for a bundle's `schedule`, as the engine's DDIM reads it."""
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=s["num_train_timesteps"], beta_start=s["beta_start"],
                         beta_end=s["beta_end"], beta_schedule=s["beta_schedule"],
                         prediction_type=s["prediction_type"], steps_offset=s["steps_offset"], clip_sample=False,
                         set_alpha_to_one=s["set_alpha_to_one"], timestep_spacing=s["timestep_spacing"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("sdxl") / "tiny-xl")


@pytest.fixture(scope="module")
def xl_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xllib")


@pytest.fixture(scope="module")
def xl_scene(tiny: Path, xl_lib: Path, photos: dict) -> tuple[Run, Path]:
    """Stage I: LoRA, default mixed precision, caption dropout on (the null prompt is all zeros)."""
    run = run_trainer("scene", str(photos["scene"]), "--name", "lake", "--library", str(xl_lib), "--backbone", "sdxl",
                 "--base", str(tiny), "--steps", "3", "--resolution", RES, "--lr", "1e-2", "--threads", "1",
                 "--null-prob", "0.5")
    assert run.rc == 0, run.stderr[-3000:]
    return run, xl_lib / "lake"


@pytest.fixture(scope="module")
def xl_subject(xl_scene: tuple[Run, Path], xl_lib: Path, photos: dict) -> tuple[Run, Path]:
    """Stage II: the backbone and base come from the scene bundle; a mask; class word 'backpack'."""
    run = run_trainer("subject", str(photos["subject"]), "--scene", "lake", "--name", "backpack", "--mask",
                 str(photos["mask"]), "--class-word", "backpack", "--library", str(xl_lib), "--steps", "3",
                 "--lr", "1e-2", "--threads", "1", "--mixed-precision", "no")
    assert run.rc == 0, run.stderr[-3000:]
    return run, xl_lib / "backpack"


# ---- the tiny checkpoint ------------------------------------------------------

def test_tiny_checkpoint_is_sdxl_diffusers_layout_and_deterministic(tiny: Path, tmp_path: Path) -> None:
    for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (tiny / part).is_dir(), part
    index = json.loads((tiny / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    unet = json.loads((tiny / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time" and unet["use_linear_projection"] is True
    assert unet["cross_attention_dim"] == D1 + D2
    assert unet["projection_class_embeddings_input_dim"] == 6 * unet["addition_time_embed_dim"] + P
    te2 = json.loads((tiny / "text_encoder_2" / "config.json").read_text())
    assert te2["projection_dim"] == P and te2["hidden_size"] == D2
    sched = json.loads((tiny / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "EulerDiscreteScheduler"
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"], sched["steps_offset"],
            sched["timestep_spacing"]) == ("scaled_linear", 0.00085, 0.012, 1, "leading")
    assert json.loads((tiny / "tokenizer_2" / "special_tokens_map.json").read_text())["pad_token"] == "!"
    assert (tiny / "tokenizer" / "vocab.json").read_bytes() == (tiny / "tokenizer_2" / "vocab.json").read_bytes()

    # diffusers itself loads it as an SDXL pipeline with VAE scale factor 2.
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny), local_files_only=True)
    assert pipe.vae_scale_factor == 2 and pipe.tokenizer_2.pad_token_id == 0
    n = sum(p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2) for p in m.parameters())
    assert n < 2_000_000

    again = make_tiny(tmp_path / "again")
    other = make_tiny(tmp_path / "other", "--seed", "7")
    for f in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
              "text_encoder/model.safetensors", "text_encoder_2/model.safetensors", "tokenizer_2/vocab.json",
              "scheduler/scheduler_config.json", "model_index.json"):
        assert (tiny / f).read_bytes() == (again / f).read_bytes(), f
    assert (tiny / "unet/diffusion_pytorch_model.safetensors").read_bytes() != \
        (other / "unet/diffusion_pytorch_model.safetensors").read_bytes()


# ---- Stage I and Stage II bundles ---------------------------------------------

def test_sdxl_scene_bundle(xl_scene: tuple[Run, Path], tiny: Path) -> None:
    run, folder = xl_scene
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["backbone"] == "sdxl" and m["stage"] == 1 and m["parent"] is None
    assert {f["path"] for f in m["files"]} == {"text_encoder.onnx", "unet.onnx", "vae_encoder.onnx",
                                              "vae_decoder.onnx", "tokenizer.json", "weights.safetensors",
                                              "scene.png", "preview.png"}
    assert m["preview"] == "preview.png" and Image.open(folder / "preview.png").size == (64, 32)
    assert m["model"]["conditioning"] == {"pooled_size": P, "time_ids": TIME_IDS, "pad_id_2": 0,
                                          "zero_negative": True}
    assert m["model"] | {"base": None, "conditioning": None} == {
        "resolution": 32, "size_multiple": 4, "min_size": 4, "channels": 3, "value_range": [-1, 1],
        "latent_channels": 4, "vae_scale_factor": 2, "scaling_factor": 0.13025, "unet_in_channels": 4,
        "precision": "float32", "base": None, "conditioning": None}
    assert m["model"]["base"]["path"] == str(tiny.resolve()) and m["model"]["base"]["name"] == "tiny-xl"
    assert m["schedule"] == {"type": "ddpm", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
                             "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
                             "steps_offset": 1, "timestep_spacing": "leading", "set_alpha_to_one": False}
    t = m["text"]
    assert (t["max_length"], t["hidden_size"]) == (77, D1 + D2) and t["pad_id"] == t["eos_id"] != t["bos_id"]
    g = m["graphs"]
    assert [(x["name"], x["shape"]) for x in g["text_encoder"]["inputs"]] == [("input_ids", ["N", 77]),
                                                                              ("input_ids_2", ["N", 77])]
    assert [(x["name"], x["shape"]) for x in g["text_encoder"]["outputs"]] == [
        ("last_hidden_state", ["N", 77, D1 + D2]), ("text_embeds", ["N", P])]
    assert [(x["name"], x["dtype"], x["shape"]) for x in g["unet"]["inputs"]] == [
        ("sample", "float32", ["N", 4, "h", "w"]), ("timestep", "int64", ["N"]),
        ("encoder_hidden_states", "float32", ["N", 77, D1 + D2]), ("text_embeds", "float32", ["N", P]),
        ("time_ids", "float32", ["N", 6])]
    # The trainer's own check of every graph against PyTorch, recorded.
    diffs = m["training"]["onnx_max_abs_diff"]
    assert set(diffs) == {"text_encoder", "unet", "vae_encoder", "vae_decoder"}
    assert all(isinstance(v, float) and v < 2e-3 for v in diffs.values()), diffs
    assert m["training"]["backbone"] == "sdxl" and m["training"]["caption_dropout"] == 0.5
    kinds = [e["event"] for e in run.events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert [e["phase"] for e in run.events if e["event"] == "phase"] == ["train", "export", "verify", "write"]
    assert run.last("progress")["step"] == 3 == run.last("progress")["total"]


def test_sdxl_subject_bundle(xl_subject: tuple[Run, Path], xl_scene: tuple[Run, Path], photos: dict) -> None:
    _, folder = xl_subject
    _, scene = xl_scene
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["stage"] == 2 and m["backbone"] == "sdxl"
    assert m["parent"] == {"name": "lake",
                           "manifest_sha256": hashlib.sha256((scene / "bundle.json").read_bytes()).hexdigest()}
    scene_c, subj = m["tokens"]["concepts"]
    assert scene_c == manifest(scene)["tokens"]["concepts"][0]
    assert subj["role"] == "subject" and subj["class_word"] == "backpack"
    assert m["text"]["prompts"] == {"add": f"a photo of {subj['identifier']} backpack in {scene_c['identifier']} scene",
                                    "scene": scene_c["prompt"], "negative": ""}
    assert m["model"]["conditioning"] == manifest(scene)["model"]["conditioning"]
    assert m["model"]["base"] == manifest(scene)["model"]["base"]
    assert m["subject"] == {"file": "subject.png", "has_mask": True}
    assert m["training"]["prior_loss_weight"] == 1.0
    # Stage II continued Stage I's UNet LoRA: same keys, other values.
    from safetensors.torch import load_file
    a, b = load_file(scene / "weights.safetensors"), load_file(folder / "weights.safetensors")
    assert a.keys() == b.keys() and all(k.startswith("unet.") and "lora_" in k for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_training_conditions_the_unet_as_sdxl_does(tiny: Path, photos: dict, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What one training step feeds the UNet: diffusers' SDXL prompt embeddings and pooled embeddings, an
    all-zero null prompt (force_zeros_for_empty_prompt), and time_ids [R, R, 0, 0, R, R]."""
    from diffusers import StableDiffusionXLPipeline

    from pie_trainer.core.run import Runtime
    from pie_trainer.sd.base import check_base
    from pie_trainer.sd.settings import SdSettings
    from pie_trainer.sdxl.run import XlJob, XlTrainer

    base = check_base(str(tiny), backbone="sdxl")
    settings = SdSettings(stage=1, steps=1, batch=2, lr=1e-3, resolution=24, class_word="scene",
                          mixed_precision="no", caption_dropout=0.5, backbone="sdxl")
    job = XlJob(stage=1, name="t", library=tmp_path, base=base, settings=settings, concepts=[], parent=None,
                meta={}, scene=Image.open(photos["scene"]).convert("RGB"), scene_prompt="a photo of zwx scene")
    tr = XlTrainer(job, Runtime(device=torch.device("cpu"), threads=1, force=False), tmp_path / "ck")
    hidden, pooled = tr.cached["scene"]
    assert hidden.shape == (1, 77, D1 + D2) and pooled.shape == (1, P)
    assert all(float(c.abs().max()) == 0.0 for c in tr.cached["null"])
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny), local_files_only=True, add_watermarker=False)
    with torch.no_grad():
        want_h, _, want_p, _ = pipe.encode_prompt("a photo of zwx scene", device="cpu",
                                                  do_classifier_free_guidance=False)
    assert torch.allclose(hidden, want_h, atol=1e-5) and torch.allclose(pooled, want_p, atol=1e-5)

    seen: list[dict] = []
    forward = tr.parts.unet.forward

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs["added_cond_kwargs"])  # type: ignore[arg-type]
        return forward(*args, **kwargs)

    monkeypatch.setattr(tr.parts.unet, "forward", spy)
    tr.train_step()
    (added,) = seen
    assert added["time_ids"].tolist() == [[24.0, 24.0, 0.0, 0.0, 24.0, 24.0]] * 2
    assert added["text_embeds"].shape == (2, P)
    assert tr.step == 1 and np.isfinite(tr.loss_avg)


# ---- graphs -------------------------------------------------------------------

def _ids(tok: object, text: dict, prompt: str, pad: int) -> np.ndarray:
    """The engine's recipe (schema/README.md): no special tokens, L-2 ids, bos + ids + eos, pad to L."""
    L = text["max_length"]
    ids = tok.encode(prompt, add_special_tokens=False).ids[: L - 2]  # type: ignore[attr-defined]
    return np.array([[text["bos_id"], *ids, text["eos_id"]] + [pad] * (L - 2 - len(ids))], np.int64)


def test_sdxl_graphs_match_pytorch_and_diffusers_encoding(xl_subject: tuple[Run, Path], tiny: Path) -> None:
    """Independent of the trainer's own check: the text graph against diffusers' StableDiffusionXLPipeline
    .encode_prompt on the fine-tuned weights; the UNet graph against diffusers' UNet called with its
    added_cond_kwargs, at two batch sizes and non-square sizes; and training changed the UNet."""
    from diffusers import StableDiffusionXLPipeline
    from tokenizers import Tokenizer

    from pie_trainer.sd import models as md
    from pie_trainer.sd.base import check_base

    _, folder = xl_subject
    m = manifest(folder)
    base = check_base(str(tiny), backbone="sdxl")
    parts, _ = md.finetuned(base, folder / "weights.safetensors")
    pipe = StableDiffusionXLPipeline(vae=parts.vae, text_encoder=parts.text_encoder,
                                     text_encoder_2=parts.text_encoder_2, tokenizer=parts.tokenizer,
                                     tokenizer_2=parts.tokenizer_2, unet=parts.unet, scheduler=parts.scheduler,
                                     add_watermarker=False)
    sess = {k: ort.InferenceSession(str(folder / g["file"]), providers=["CPUExecutionProvider"])
            for k, g in m["graphs"].items()}
    for k, g in m["graphs"].items():
        assert [i.name for i in sess[k].get_inputs()] == [t["name"] for t in g["inputs"]], k
        assert [o.name for o in sess[k].get_outputs()] == [t["name"] for t in g["outputs"]], k
    tok = Tokenizer.from_file(str(folder / m["text"]["tokenizer"]))
    text, pad2 = m["text"], m["model"]["conditioning"]["pad_id_2"]
    for prompt in (text["prompts"]["add"], "a photo of a dog on the lake", "x"):
        hidden, pooled = sess["text_encoder"].run(None, {"input_ids": _ids(tok, text, prompt, text["pad_id"]),
                                                         "input_ids_2": _ids(tok, text, prompt, pad2)})
        with torch.no_grad():
            want_h, _, want_p, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
        assert hidden.shape == (1, 77, D1 + D2) and pooled.shape == (1, P)
        assert np.abs(hidden - want_h.numpy()).max() < 1e-4, prompt
        assert np.abs(pooled - want_p.numpy()).max() < 1e-4, prompt

    rng = np.random.default_rng(3)
    base_unet = md.load_base(base).unet
    for n, h, w in ((1, 8, 8), (3, 12, 20)):
        feeds: dict[str, np.ndarray] = {
                 "sample": rng.standard_normal((n, 4, h, w)).astype(np.float32),
                 "timestep": rng.integers(0, 1000, n).astype(np.int64),
                 "encoder_hidden_states": rng.standard_normal((n, 77, D1 + D2)).astype(np.float32),
                 "text_embeds": rng.standard_normal((n, P)).astype(np.float32),
                 "time_ids": np.tile(np.array([[2 * h, 2 * w, 0, 0, 2 * h, 2 * w]], np.float32), (n, 1))}
        got = sess["unet"].run(None, feeds)[0]
        t = {k: torch.from_numpy(v) for k, v in feeds.items()}
        added = {"text_embeds": t["text_embeds"], "time_ids": t["time_ids"]}
        with torch.no_grad():
            want = parts.unet(t["sample"], t["timestep"], t["encoder_hidden_states"], added_cond_kwargs=added).sample
            before = base_unet(t["sample"], t["timestep"], t["encoder_hidden_states"], added_cond_kwargs=added).sample
        assert got.shape == (n, 4, h, w)
        assert np.abs(got - want.numpy()).max() < 1e-3 * max(1.0, float(want.abs().max()))
        assert (want - before).abs().max() > 1e-4       # the LoRA was merged into the export
        # time_ids reach the UNet: another size, another prediction.
        other = sess["unet"].run(None, {**feeds, "time_ids": feeds["time_ids"] * 2})[0]
        assert np.abs(other - got).max() > 1e-5


def test_bundle_alone_samples_like_diffusers(xl_subject: tuple[Run, Path], tiny: Path, tmp_path: Path) -> None:
    """Text-to-image from the bundle's files only (ONNX Runtime, tokenizer.json, manifest schedule and
    conditioning) equals diffusers' StableDiffusionXLPipeline on base + weights.safetensors: same prompt,
    noise, DDIM steps and guidance, the negative all zeros (force_zeros_for_empty_prompt)."""
    from diffusers import StableDiffusionXLPipeline

    from pie_trainer.sd import models as md
    from pie_trainer.sd.base import check_base
    from pie_trainer.sd.sample import Bundle

    _, folder = xl_subject
    b = Bundle(folder)
    noise = np.random.default_rng(5).standard_normal((2, 4, 16, 24)).astype(np.float32)
    ours = b.txt2img(b.m["text"]["prompts"]["add"], noise, steps=6, guidance=4.0)
    parts, _ = md.finetuned(check_base(str(tiny), backbone="sdxl"), folder / "weights.safetensors")
    sched = ddim_of(b.m["schedule"])
    pipe = StableDiffusionXLPipeline(vae=parts.vae, text_encoder=parts.text_encoder,
                                     text_encoder_2=parts.text_encoder_2, tokenizer=parts.tokenizer,
                                     tokenizer_2=parts.tokenizer_2, unet=parts.unet, scheduler=sched,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    want = pipe([b.m["text"]["prompts"]["add"]] * 2, height=32, width=48, num_inference_steps=6, guidance_scale=4.0,
                latents=torch.from_numpy(noise), output_type="np").images
    got = np.clip(ours / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    assert got.shape == want.shape == (2, 32, 48, 3)
    assert np.abs(got - want).max() < 2e-3

    out, npy = tmp_path / "s.png", tmp_path / "s.npy"
    run = run_trainer("sample", "--bundle", str(folder), "--token", "subject", "--count", "2", "--steps", "3",
                 "--height", "32", "--width", "40", "--out", str(out), "--npy", str(npy))
    assert run.rc == 0 and run.events == [], run.stderr[-2000:]
    assert Image.open(out).size == (80, 32) and np.load(npy).shape == (2, 3, 32, 40)


def test_bundle_alone_img2img_like_diffusers(xl_subject: tuple[Run, Path], tiny: Path, photos: dict) -> None:
    """img2img from the bundle alone (the vae_encoder graph, noise to 60 % of the way, DDIM back) equals
    diffusers' StableDiffusionXLImg2ImgPipeline given the same latents and noise (its time_ids: the image's
    size, crop 0, 0)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from pie_trainer.sd import models as md
    from pie_trainer.sd.base import check_base
    from pie_trainer.sd.sample import Bundle

    _, folder = xl_subject
    b = Bundle(folder)
    img = Image.open(photos["scene"]).convert("RGB").resize((48, 32))
    image = (np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1).repeat(2, axis=0)
    noise = torch.randn((2, 4, 16, 24), generator=torch.Generator().manual_seed(7))
    prompt = b.m["text"]["prompts"]["add"]
    ours = b.img2img(prompt, image, noise.numpy(), steps=10, guidance=3.0, strength=0.6)
    parts, _ = md.finetuned(check_base(str(tiny), backbone="sdxl"), folder / "weights.safetensors")
    sched = ddim_of(b.m["schedule"])
    pipe = StableDiffusionXLImg2ImgPipeline(vae=parts.vae, text_encoder=parts.text_encoder,
                                            text_encoder_2=parts.text_encoder_2, tokenizer=parts.tokenizer,
                                            tokenizer_2=parts.tokenizer_2, unet=parts.unet, scheduler=sched,
                                            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
                                            add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.from_numpy(b.sess["vae_encoder"].run(None, {"image": image})[0])   # posterior mean x factor
    want = pipe([prompt] * 2, image=latents, strength=0.6, num_inference_steps=10, guidance_scale=3.0,
                generator=torch.Generator().manual_seed(7), output_type="np").images
    got = np.clip(ours / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    assert got.shape == want.shape == (2, 32, 48, 3)
    assert np.abs(got - want).max() < 2e-3


def test_fp16_export_keeps_the_vae_in_float32(tiny: Path, photos: dict, tmp_path: Path) -> None:
    """A float16 bundle (normally exported on CUDA; traced on the CPU here): the text encoders and UNet
    in half precision, SDXL's VAE (force_upcast: it overflows in float16) in float32; every graph takes
    and gives float32."""
    import onnx
    run = run_trainer("scene", str(photos["scene"]), "--name", "half", "--library", str(tmp_path), "--backbone", "sdxl",
                 "--base", str(tiny), "--steps", "1", "--resolution", RES, "--export-precision", "fp16",
                 "--threads", "1", "--preview-steps", "0")
    assert run.rc == 0, run.stderr[-3000:]
    folder = tmp_path / "half"
    assert bundle_problems(folder) == []
    m = manifest(folder)
    assert m["model"]["precision"] == "float16" and "preview" not in m
    for name, g in m["graphs"].items():
        proto = onnx.load(str(folder / g["file"]))
        io = {v.name: v.type.tensor_type.elem_type for v in list(proto.graph.input) + list(proto.graph.output)}
        assert io == {t["name"]: (onnx.TensorProto.INT64 if t["dtype"] == "int64" else onnx.TensorProto.FLOAT)
                      for t in g["inputs"] + g["outputs"]}, name
        kinds = {t.data_type for t in proto.graph.initializer if len(t.dims) >= 2}
        want = onnx.TensorProto.FLOAT if name.startswith("vae_") else onnx.TensorProto.FLOAT16
        assert kinds == {want}, (name, kinds)


# ---- refusals -----------------------------------------------------------------

def test_each_backbone_refuses_the_others_checkpoint(tiny: Path, tmp_path: Path, photos: dict,
                                                    xl_scene: tuple[Run, Path], xl_lib: Path) -> None:
    sd_tiny = make_tiny(tmp_path / "sd-tiny", module="pie_trainer.sd.tiny")
    lib = tmp_path / "lib"

    def scene(backbone: str, base: str, *extra: str) -> Run:
        return run_trainer("scene", str(photos["scene"]), "--name", "n", "--library", str(lib), "--backbone", backbone,
                      "--base", base, "--steps", "1", "--resolution", RES, *extra, timeout=60)

    def refused(run: Run, *words: str) -> None:
        assert run.rc == 2, run.stderr[-2000:]
        msg = run.last("error")["message"]
        assert all(w in msg for w in words), msg
        assert not [e for e in run.events if e["event"] == "progress"]

    refused(scene("sd", str(tiny)), "Stable Diffusion XL", "use --backbone sdxl")
    refused(scene("sdxl", str(sd_tiny)), "Stable Diffusion 1.x/2.x", "use --backbone sd ")
    refused(scene("sdxl", str(tiny), "--optimize", "on"), "--optimize on is not available for the sdxl backbone")
    refused(scene("sdxl", str(tiny), "--train-text-encoder"), "--train-text-encoder is not supported")
    refused(scene("sdxl", str(tiny), "--channels", "16"), "does not use --channels")
    refused(run_trainer("scene", str(photos["scene"]), "--name", "n", "--library", str(lib), "--backbone", "sdxl"),
            "--backbone sdxl needs --base DIR")
    # An SDXL folder whose second tokenizer has another vocabulary: one tokenizer.json cannot serve both.
    odd = tmp_path / "odd"
    shutil.copytree(tiny, odd)
    vocab = json.loads((odd / "tokenizer_2" / "vocab.json").read_text())
    vocab["zzzq</w>"] = len(vocab)
    (odd / "tokenizer_2" / "vocab.json").write_text(json.dumps(vocab))
    refused(scene("sdxl", str(odd)), "two tokenizers with different vocabularies")
    # A subject grows on its scene's backbone.
    refused(run_trainer("subject", str(photos["subject"]), "--scene", "lake", "--name", "s", "--library", str(xl_lib),
                   "--backbone", "sd", "--base", str(sd_tiny), "--steps", "1"), "uses the backbone 'sdxl'")
    assert visible_entries(lib) == []


# ---- cancel and resume ----------------------------------------------------------

def test_sdxl_cancel_and_resume(tmp_path: Path, photos: dict, tiny: Path) -> None:
    lib = tmp_path / "lib"
    common = ["scene", str(photos["scene"]), "--name", "c", "--library", str(lib), "--backbone", "sdxl", "--base",
              str(tiny), "--threads", "1", "--preview-steps", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "pie_trainer", *common, "--steps", "60", "--resolution", RES,
                             "--mixed-precision", "no"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env())
    assert proc.stdout is not None
    seen: list[dict] = []
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        seen.extend(parse_stream(line))
        if seen[-1]["event"] == "progress" and seen[-1]["step"] >= 2:
            break
        assert time.monotonic() < deadline, "timed out"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    run = Run(proc.returncode, seen + parse_stream(out), err)
    assert run.rc == 3, run.stderr[-2000:]
    stopped = run.last("cancelled")["step"]
    assert 2 <= stopped < 60 and visible_entries(lib) == []

    resumed = run_trainer(*common, "--steps", "1", "--resume")        # the checkpoint's settings win
    assert resumed.rc == 0, resumed.stderr[-2000:]
    first = next(e for e in resumed.events if e["event"] == "progress")
    assert first["step"] == stopped + 1 and first["total"] == 60
    m = manifest(lib / "c")
    assert m["backbone"] == "sdxl" and m["training"]["resumed"] is True and m["training"]["steps"] == 60
    assert bundle_problems(lib / "c") == []


# ---- single-file SDXL checkpoints -----------------------------------------------

def test_single_file_sdxl_converts_to_the_same_model_and_learns_the_same_scene(
        tiny: Path, xl_scene: tuple[Run, Path], photos: dict, tmp_path: Path) -> None:
    """The tiny SDXL checkpoint saved as ONE file in the original layout (conditioner.embedders.0 CLIP,
    .1 OpenCLIP with fused in_proj): converted offline, its four models are the folder's weight for weight,
    both tokenizers come along, and `scene --base FILE` trains what `--base DIR` trains."""
    from ldm_layout import save_single_file
    from safetensors.torch import load_file

    single = tmp_path / "tiny-xl.safetensors"
    save_single_file(str(tiny), str(single))
    e = env()
    e["PIE_CACHE"] = str(tmp_path / "cache")
    lib = tmp_path / "lib"
    p = subprocess.run([sys.executable, "-m", "pie_trainer", "scene", str(photos["scene"]), "--name", "lake",
                        "--library", str(lib), "--backbone", "sdxl", "--base", str(single), "--steps", "3",
                        "--resolution", RES, "--lr", "1e-2", "--threads", "1", "--null-prob", "0.5"],
                       capture_output=True, text=True, env=e, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "converting tiny-xl.safetensors (pie's tiny SDXL test architecture)" in p.stderr
    (converted,) = (tmp_path / "cache" / "sd-single-file").iterdir()
    for part, f in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                    ("text_encoder", "model.safetensors"), ("text_encoder_2", "model.safetensors")):
        a, b = load_file(tiny / part / f), load_file(converted / part / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    for tok in ("tokenizer", "tokenizer_2"):
        for f in ("vocab.json", "merges.txt", "special_tokens_map.json"):
            assert (converted / tok / f).read_text() == (tiny / tok / f).read_text(), f"{tok}/{f}"
    assert bundle_problems(lib / "lake") == []
    m = manifest(lib / "lake")
    assert m["backbone"] == "sdxl" and m["model"]["base"]["path"] == str(single.resolve())
    assert m["model"]["conditioning"] == manifest(xl_scene[1])["model"]["conditioning"]
    a, b = load_file(xl_scene[1] / "weights.safetensors"), load_file(lib / "lake" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_single_files_go_to_their_own_backbone_and_the_refiner_is_refused(tiny: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ldm_layout import save_single_file

    from pie_trainer.core.errors import BadInput
    from pie_trainer.sd.base import check_base

    cache = tmp_path / "cache"
    monkeypatch.setenv("PIE_CACHE", str(cache))
    xl = tmp_path / "xl.safetensors"
    save_single_file(str(tiny), str(xl))
    sd = tmp_path / "sd.safetensors"
    save_single_file(str(make_tiny(tmp_path / "tiny-sd", module="pie_trainer.sd.tiny")), str(sd))
    with pytest.raises(BadInput, match="is a Stable Diffusion XL checkpoint .*use --backbone sdxl"):
        check_base(str(xl), backbone="sd")
    with pytest.raises(BadInput, match="pie's tiny test architecture, not Stable Diffusion XL: use --backbone sd"):
        check_base(str(sd), backbone="sdxl")
    from pie_trainer.sd import single_file as sf
    header = sf.read_header(xl)[0]
    refiner = {k: v["shape"] for k, v in header.items()} | {sf.XL_REFINER: [48, 24]}
    raw = json.dumps({k: {"dtype": "F16", "shape": s, "data_offsets": [0, 0]} for k, s in refiner.items()}).encode()
    f = tmp_path / "refiner.safetensors"
    f.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(BadInput, match="Stable Diffusion XL refiner"):
        check_base(str(f), backbone="sdxl")
    assert not cache.exists(), "a refused file was converted"


def test_shipped_sdxl_configs_fit_the_real_sdxl_layout(tmp_path: Path) -> None:
    """sd/configs/sdxl builds SDXL 1.0 base's models (its published parameter counts, on the meta device);
    their weights in the original layout are what diffusers itself takes for an SDXL base file, and what
    pie identifies as one; the config folder a real file is converted with has both of SDXL's tokenizers
    (CLIP's vocabulary from set-up, the second padding with '!')."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from ldm_layout import to_ldm
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pie_trainer.sd import single_file as sf

    c = sf.CONFIGS / "sdxl"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(c / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(c / "vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(c / "text_encoder"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(c / "text_encoder_2"))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, te, te2)]
    assert counts == [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]
    state = to_ldm(unet.state_dict(), vae.state_dict(), te.state_dict(), 2, {0, 1}, 4, te2.state_dict())
    assert infer_diffusers_model_type(state) == "xl_base"
    header = {k: {"dtype": "F16", "shape": list(v.shape)} for k, v in state.items()}
    assert sf.identify(Path("sdxl.safetensors"), header) == sf.Arch("sdxl", "Stable Diffusion XL 1.0", False)
    from transformers import CLIPTokenizer
    fake = sf.SingleFile(path=tmp_path / "sdxl.safetensors", arch=sf.Arch("sdxl", "Stable Diffusion XL 1.0", False),
                         fingerprint="0" * 64, half=True)
    folder = sf._config_folder(fake, tmp_path / "config")
    for sub, pad in (("tokenizer", 49407), ("tokenizer_2", 0)):
        tok = CLIPTokenizer.from_pretrained(folder / sub)
        assert tok("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
        assert tok.pad_token_id == pad, sub
