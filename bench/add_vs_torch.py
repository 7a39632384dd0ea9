#!/usr/bin/env python3
"""Add with the engine (`pie add`, ONNX Runtime) against the same bundle sampled by PyTorch.

Run with the trainer's python (it has torch and the pie_trainer package):

  PYTHONPATH=trainer $(bash build/trainer-env.sh) bench/add_vs_torch.py \\
      --library LIB --concept SUBJECT --image scene.png --selection selection.png

Three samplers, alternated --repeat times in this one process so that the
figures share the machine's load:

- engine: `pie --json add --threads T --steps S --strength F --guidance G --seed N`;
  its own `seconds` (session creation + preparation + sampling + blending, no
  image decoding/encoding) and the process's wall time; it says which denoiser
  graph it chose (`precision`: int8 where the bundle has one and a start-up
  timing on this machine, remembered in the build cache, showed it faster;
  one untimed Add first makes that timing). Where it chose int8, the same Add
  with `PIE_PRECISION=fp32` is timed too (engine-fp32), and the two results'
  pixels are compared (same seed, same noise: only the denoiser differs);
- torch-masked: pie_trainer's TinyUNet with the bundle's weights.pt, the same
  masked DDIM loop as the engine (onnx/src/add.rs::sample): the same working size
  (onnx/src/plan.rs), the same timesteps (onnx/src/schedule.rs: round(steps x
  strength) denoiser evaluations, 10 at the defaults), the same batch per
  evaluation (3 tokens subject/scene/null; 2 for a scene concept; no null at
  guidance 1), the subject's eps where it is placed (blurred) and the scene's
  around it, guidance, clamped x0, known pixels re-noised and re-imposed every
  step, sampling started from the scene with the subject pasted in;
  torch.set_num_threads(T), fp32 like the trainer's sampler; timed from loading
  the weights to the blended crop, like the engine's `seconds`;
- trainer-cli: the trainer's own reference sampler, `python -m pie_trainer sample
  --bundle B --token SUBJECT --count 1 --steps K --height H --width W`, at the
  engine's working size and number of denoiser steps (it runs a batch of 2 per
  step, cond + null, from pure noise; its wall time includes importing torch).

What the twin does NOT mirror exactly: the engine's pixel compositing around the
loop (add.rs::prepare and the blend), i.e. the low-frequency colour matching of
the pasted subject, the distance-transform footprint/ring/cut masks (the twin
approximates them with max-pool dilations: the model is free in a ring where
subject and scene meet, the subject's inside and the rest of the selection keep
their pixels), the full-resolution detail layer and the feathered write mask.
These are a few passes over the crop, done once per Add, against 10 x batch-3
UNet evaluations: on the seascape+dog default bundle (108x104 working size, 1
thread) the engine's time apart from the evaluations (session creation,
preparation, blend) is about 0.07 s of 1.46 s (from `--steps 5`, one
evaluation: 0.21 s), the twin's own (loading weights, preparation, blend) about
0.04 s, so leaving them out can only flatter PyTorch, by about 2 % of the
total. The twin's picture is therefore a little different and softer (no
detail layer); the noise streams differ too (ChaCha8 in the engine, torch's
generator here).

Checks, per run, that the twin ran as many UNet evaluations as the engine
reports (`step i/N` in its progress), at the batch the engine uses, on the
working size of the plan.rs mirror (the CLI does not report its working size).

Prints a table of medians and the speed-ups; never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from common import load, machine, pie_env  # noqa: E402

# --- mirrors of the engine's plan (onnx/src/plan.rs) and timesteps (onnx/src/schedule.rs)

def plan(img_w: int, img_h: int, sel: tuple[int, int, int, int], model: dict) -> dict:
    """onnx/src/plan.rs::plan: the crop around the selection and its working size."""
    short = max(min(img_w, img_h), 1)
    scale = min(model["scene_short_side"] / short, 1.0)
    sx, sy, sw0, sh0 = sel
    sw, sh = sw0 * scale, sh0 * scale
    mult = max(model.get("size_multiple", 4), 1)
    min_size = max(model.get("min_size", 16), mult)
    iw, ih = img_w * scale, img_h * scale
    margin = max(16.0, max(sw, sh) / 2.0)

    def span(pos: float, length: float, full: float) -> tuple[float, float]:
        need = max(length + 2 * margin, float(min_size))
        a = pos - (need - length) / 2
        b = a + need
        if a < 0:
            b -= a
            a = 0.0
        if b > full:
            a = max(a - (b - full), 0.0)
            b = full
        return a, b

    def to_img(a: float, b: float, full: int) -> tuple[int, int]:
        a2 = min(math.floor(a / scale), full - 1)
        b2 = min(max(math.ceil(b / scale), a2 + 1), full)
        return a2, b2

    wx0, wx1 = span(sx * scale, sw, iw)
    wy0, wy1 = span(sy * scale, sh, ih)
    x0, x1 = to_img(wx0, wx1, img_w)
    y0, y1 = to_img(wy0, wy1, img_h)

    def work(length: int) -> int:
        v = length * scale / mult
        return max(max(round(v), 1) * mult, -(-min_size // mult) * mult)

    return {"crop": (x0, y0, x1 - x0, y1 - y0), "work_w": work(x1 - x0), "work_h": work(y1 - y0), "scale": scale}


def timesteps(n_train: int, steps: int, strength: float) -> list[int]:
    """onnx/src/schedule.rs::timesteps: round(steps x strength) of them, from t = strength x (n_train - 1) down."""
    last = n_train - 1
    s = min(max(strength, 0.0), 1.0)
    t_start = min(round(s * last), last)
    n = max(round(steps * s), 1)
    ts: list[int] = []
    for k in range(n, 0, -1):
        t = round(t_start * k / n)
        if not ts or ts[-1] != t:
            ts.append(t)
    return ts or [0]


def batch_tokens(manifest: dict, guidance: float) -> list[int]:
    """add.rs::sample: subject (Stage II only), scene, and null unless guidance is 1."""
    info = manifest["tokens"]
    by_role = {c["role"]: int(c["id"]) for c in info["concepts"]}
    toks = [by_role["subject"]] if "subject" in by_role and manifest["stage"] == 2 else []
    toks.append(by_role["scene"])
    if guidance != 1.0:
        toks.append(int(info["null"]))
    return toks


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() + 1 - xs.min()), int(ys.max() + 1 - ys.min())


# --- the PyTorch twin of the engine's Add

def torch_add(bundle: Path, scene: np.ndarray, sel: np.ndarray, steps: int, strength: float, guidance: float,
              seed: int, threads: int, bf16: bool = False) -> dict:
    import torch

    from pie_trainer.pixel.diffusion import Schedule
    from pie_trainer.pixel.weights import load_weights

    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    manifest = json.loads((bundle / "bundle.json").read_text())
    model, _info = load_weights(bundle / "weights.pt")
    t_loaded = time.perf_counter()
    H, W = sel.shape
    p = plan(W, H, bbox(sel > 0), manifest["model"])
    cx, cy, cw, ch = p["crop"]
    w, h = p["work_w"], p["work_h"]
    crop = Image.fromarray(scene[cy:cy + ch, cx:cx + cw])
    known = torch.from_numpy(np.asarray(crop.resize((w, h), Image.Resampling.BILINEAR), np.float32) / 127.5 - 1.0)
    known = known.permute(2, 0, 1).contiguous()
    m_np = np.asarray(Image.fromarray(sel[cy:cy + ch, cx:cx + cw]).resize((w, h), Image.Resampling.BILINEAR),
                      np.float32) / 255.0
    m = torch.from_numpy(m_np)
    comp = known.clone()
    subj_png = bundle / manifest.get("subject", {}).get("file", "subject.png") if isinstance(
        manifest.get("subject"), dict) else bundle / "subject.png"
    place = torch.zeros_like(m)
    free = torch.ones_like(m)   # where the model is free (times the selection)
    write = torch.ones_like(m)  # what is written back (times the selection)
    if subj_png.is_file():  # the subject scaled to fit the selection's bounds, as the engine does
        s = Image.open(subj_png).convert("RGBA")
        a = np.asarray(s)[..., 3]
        bx, by, bw, bh = bbox(a > 0)
        sx, sy, sw, sh = bbox(np.asarray(m) > 0.5)
        fit = min(sw / bw, sh / bh)
        pw, ph = max(1, round(bw * fit)), max(1, round(bh * fit))
        piece = s.crop((bx, by, bx + bw, by + bh)).resize((pw, ph), Image.Resampling.BILINEAR)
        r = np.asarray(piece, np.float32) / 255.0
        ox, oy = round(sx + (sw - pw) / 2), round(sy + (sh - ph) / 2)
        pm = torch.zeros_like(m)
        pm[oy:oy + ph, ox:ox + pw] = torch.from_numpy(r[..., 3])[: h - oy, : w - ox]
        pc = torch.zeros_like(known)
        pc[:, oy:oy + ph, ox:ox + pw] = torch.from_numpy(r[..., :3] * 2 - 1).permute(2, 0, 1)[:, : h - oy, : w - ox]
        place = (pm * m).clamp(0, 1)
        comp = place * pc + (1 - place) * comp
        # add.rs::around_subject with FIT (ring 0.03, fade 0.03, edge 0.02, cut_depth 0.05 of the
        # selection's short side), approximated by max-pool dilations at the working size
        short = min(sw, sh)

        def grow(b: torch.Tensor, frac: float) -> torch.Tensor:
            r = max(1, round(short * frac))
            return torch.nn.functional.max_pool2d(b[None, None].float(), 2 * r + 1, 1, r)[0, 0]

        write = grow(place > 0, 0.06)
        core = 1 - grow(place < 0.5, 0.04)                 # the subject's inside, kept
        cut = (place > 0).float() * grow(m < 0.5, 0.05)    # the subject near the selection's edge
        free = torch.maximum(write * (1 - core), cut)
        known = comp  # with a subject, what is re-imposed is the composite
    radius = max(1, math.ceil(min(w, h) / 64))
    subj = torch.nn.functional.avg_pool2d(place[None, None], 2 * radius + 1, 1, radius, count_include_pad=False)[0, 0]

    m = m * free
    toks = batch_tokens(manifest, guidance)
    has_subject = manifest["stage"] == 2 and any(c["role"] == "subject" for c in manifest["tokens"]["concepts"])
    guided = guidance != 1.0
    tokens = torch.tensor(toks, dtype=torch.int64)
    sch = manifest["schedule"]
    schedule = Schedule(num_train_timesteps=int(sch["num_train_timesteps"]), beta_start=float(sch["beta_start"]),
                        beta_end=float(sch["beta_end"]), beta_schedule=str(sch["beta_schedule"]))
    acp = schedule.alphas_cumprod()
    ts = timesteps(schedule.num_train_timesteps, steps, strength)
    gen = torch.Generator().manual_seed(seed)
    a0 = float(acp[ts[0]])
    x = math.sqrt(a0) * comp + math.sqrt(1 - a0) * torch.randn(comp.shape, generator=gen)
    nb = len(toks)
    evals, shapes = 0, set()
    t_loop = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        for i, t in enumerate(ts):
            xin = x[None].expand(nb, -1, -1, -1)
            out = model(xin, torch.full((nb,), t, dtype=torch.int64), tokens).float()
            evals += 1
            shapes.add(tuple(xin.shape))
            eps = subj * out[0] + (1 - subj) * out[1] if has_subject else out[0]
            if guided:
                eps = out[-1] + guidance * (eps - out[-1])
            at = float(acp[t])
            ap = float(acp[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            x0 = ((x - math.sqrt(1 - at) * eps) / math.sqrt(at)).clamp(-1, 1)
            e = (x - math.sqrt(at) * x0) / math.sqrt(1 - at)
            x = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * e
            kn = math.sqrt(ap) * known + (math.sqrt(1 - ap) * torch.randn(known.shape, generator=gen)
                                          if i + 1 < len(ts) else 0)
            x = m * x + (1 - m) * kn
    t_end_loop = time.perf_counter()
    res = ((x + 1) * 127.5).clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    res = np.asarray(Image.fromarray(res).resize((cw, ch), Image.Resampling.BILINEAR), np.float32)
    wr = np.asarray(Image.fromarray((write.numpy() * 255).astype(np.uint8)).resize((cw, ch), Image.Resampling.BILINEAR))
    mc = (sel[cy:cy + ch, cx:cx + cw] / 255.0 * wr / 255.0)[..., None].astype(np.float32)
    out_img = scene.copy()
    out_img[cy:cy + ch, cx:cx + cw] = (mc * res + (1 - mc) * scene[cy:cy + ch, cx:cx + cw]).round().astype(np.uint8)
    t_end = time.perf_counter()
    return {"total_s": t_end - t0, "load_s": t_loaded - t0, "loop_s": t_end_loop - t_loop, "steps": len(ts),
            "evals": evals, "shapes": shapes, "work": (w, h), "image": out_img}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", type=Path, required=True, help="concept library holding --concept")
    ap.add_argument("--concept", required=True, help="a subject (Stage II) or scene concept")
    ap.add_argument("--image", type=Path, required=True, help="scene image")
    ap.add_argument("--selection", type=Path, required=True, help="selection mask (same size)")
    ap.add_argument("--pie", type=Path, default=ROOT / "target/release/pie")
    ap.add_argument("--steps", type=int, default=50, help="engine --steps (default 50, pie add's)")
    ap.add_argument("--strength", type=float, default=0.2,
                    help="engine --strength (default 0.2, pie add's for a pixel-unet concept)")
    ap.add_argument("--guidance", type=float, default=3.0, help="engine --guidance (default 3, pie add's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="threads for both (default 1, the engine's default here)")
    ap.add_argument("--repeat", type=int, default=3, help="alternated runs of each sampler (default 3)")
    ap.add_argument("--no-trainer-cli", action="store_true", help="leave out `python -m pie_trainer sample`")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also time torch-masked under bf16 autocast (default: yes)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    bundle = args.library / args.concept
    manifest = json.loads((bundle / "bundle.json").read_text())
    scene = np.asarray(Image.open(args.image).convert("RGB"))
    sel = np.asarray(Image.open(args.selection).convert("L"))
    env = pie_env(args.library.resolve())
    tmp = Path(tempfile.mkdtemp(prefix="pie-bench."))
    engine_cmd = [str(args.pie), "--json", "--library", str(args.library), "add", str(args.image), "--selection",
                  str(args.selection), "--concept", args.concept, "--steps", str(args.steps), "--strength",
                  str(args.strength), "--guidance", str(args.guidance), "--seed", str(args.seed), "--threads",
                  str(args.threads), "--device", "cpu", "--out", str(tmp / "engine.png")]
    p = plan(scene.shape[1], scene.shape[0], bbox(sel > 0), manifest["model"])
    ts = timesteps(int(manifest["schedule"]["num_train_timesteps"]), args.steps, args.strength)
    nb = len(batch_tokens(manifest, args.guidance))
    token = next((c["identifier"] for c in manifest["tokens"]["concepts"] if c["role"] == "subject"),
                 manifest["tokens"]["concepts"][0]["identifier"])
    trainer_cmd = [sys.executable, "-m", "pie_trainer", "sample", "--bundle", str(bundle), "--token", token,
                   "--count", "1", "--steps", str(len(ts)), "--guidance", str(args.guidance), "--seed",
                   str(args.seed), "--height", str(p["work_h"]), "--width", str(p["work_w"]), "--threads",
                   str(args.threads), "--device", "cpu", "--out", str(tmp / "trainer.png")]
    tenv = dict(os.environ, PYTHONPATH=str(ROOT / "trainer"))
    print(f"# add_vs_torch: {args.concept} ({manifest['stage'] == 2 and 'subject' or 'scene'}), image "
          f"{scene.shape[1]}x{scene.shape[0]}, crop {p['crop']}, working size {p['work_w']}x{p['work_h']}, "
          f"{len(ts)} denoiser steps x batch {nb} (steps {args.steps}, strength {args.strength}, guidance "
          f"{args.guidance}), threads {args.threads}")
    print(f"# {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load()}")
    print(f"# engine: {' '.join(engine_cmd)}")
    if not args.no_trainer_cli:
        print(f"# trainer-cli: {' '.join(trainer_cmd)}")
    rec: dict[str, list[float]] = {k: [] for k in ("engine_s", "engine_wall_s", "engine_fp32_s", "torch_s",
                                                   "torch_loop_s", "torch_bf16_s", "trainer_cli_wall_s")}
    # One untimed Add: loads the files into the page cache and makes the engine's
    # once-per-machine timing of its denoiser graphs, so that no timed run pays for it.
    warm = subprocess.run(engine_cmd, env=env, capture_output=True, text=True)
    if warm.returncode != 0:
        print(warm.stderr, file=sys.stderr)
        return 1
    precision = [json.loads(line) for line in warm.stdout.splitlines() if '"done"' in line][-1].get("precision")
    fp32_cmd = [*engine_cmd[:-1], str(tmp / "engine-fp32.png")]
    fp32_env = dict(env, PIE_PRECISION="fp32")
    print(f"# engine denoiser: {precision}" + (" (also timed with PIE_PRECISION=fp32: engine-fp32)"
                                                 if precision == "int8" else ""))
    for r in range(args.repeat):
        t0 = time.perf_counter()
        e = subprocess.run(engine_cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if e.returncode != 0:
            print(e.stderr, file=sys.stderr)
            return 1
        done = [json.loads(line) for line in e.stdout.splitlines() if '"done"' in line][-1]
        # the engine's own step count: its progress says "step i/N"
        n_engine = {int(g) for g in re.findall(r'"text":\s*"step \d+/(\d+)"', e.stdout)}
        rec["engine_s"].append(float(done["seconds"]))
        rec["engine_wall_s"].append(wall)
        if done.get("precision") != precision:
            print(f"add_vs_torch: the engine ran {done.get('precision')} after {precision}", file=sys.stderr)
            return 1
        if precision == "int8":
            f = subprocess.run(fp32_cmd, env=fp32_env, capture_output=True, text=True)
            if f.returncode != 0:
                print(f.stderr, file=sys.stderr)
                return 1
            rec["engine_fp32_s"].append(float([json.loads(line) for line in f.stdout.splitlines()
                                               if '"done"' in line][-1]["seconds"]))
        t = torch_add(bundle, scene, sel, args.steps, args.strength, args.guidance, args.seed, args.threads)
        rec["torch_s"].append(t["total_s"])
        rec["torch_loop_s"].append(t["loop_s"])
        want = {(nb, 3, p["work_h"], p["work_w"])}
        if n_engine != {t["evals"]} or t["shapes"] != want:
            print(f"add_vs_torch: not the same work: engine {sorted(n_engine)} steps, twin {t['evals']} "
                  f"evaluations of {sorted(t['shapes'])} (want {len(ts)} of {sorted(want)}): "
                  f"the mirrors of plan.rs/schedule.rs/add.rs are out of date", file=sys.stderr)
            return 1
        if args.bf16:
            rec["torch_bf16_s"].append(torch_add(bundle, scene, sel, args.steps, args.strength, args.guidance,
                                                 args.seed, args.threads, bf16=True)["total_s"])
        if not args.no_trainer_cli:
            t0 = time.perf_counter()
            c = subprocess.run(trainer_cmd, env=tenv, capture_output=True, text=True)
            if c.returncode != 0:
                print(c.stderr[-2000:], file=sys.stderr)
                return 1
            rec["trainer_cli_wall_s"].append(time.perf_counter() - t0)
        print(f"  run {r + 1}: engine {rec['engine_s'][-1]:.2f} s (wall {wall:.2f})"
              + (f", engine-fp32 {rec['engine_fp32_s'][-1]:.2f} s" if rec["engine_fp32_s"] else "")
              + ", torch-masked "
              f"{rec['torch_s'][-1]:.2f} s (loop {rec['torch_loop_s'][-1]:.2f})"
              + (f", torch-bf16 {rec['torch_bf16_s'][-1]:.2f} s" if rec["torch_bf16_s"] else "")
              + (f", trainer-cli wall {rec['trainer_cli_wall_s'][-1]:.2f} s" if rec["trainer_cli_wall_s"] else "")
              + f"; {load()}", flush=True)
        if r == 0:
            Image.fromarray(t["image"]).save(tmp / "torch.png")
    med = {k: statistics.median(v) for k, v in rec.items() if v}
    print()
    print("| sampler | what is timed | median s |")
    print("|---|---|---:|")
    print(f"| engine (ONNX Runtime, {precision}) | pie add's own seconds: session + prep + {len(ts)} steps x batch "
          f"{nb} + blend | {med['engine_s']:.2f} |")
    if "engine_fp32_s" in med:
        print(f"| engine, PIE_PRECISION=fp32 | as above, the fp32 graph | {med['engine_fp32_s']:.2f} |")
    print(f"| engine, process | `pie add` wall: + start, image decode/encode | {med['engine_wall_s']:.2f} |")
    print(f"| PyTorch, same masked loop | load weights + prep + {len(ts)} steps x batch {nb} + blend (fp32) | "
          f"{med['torch_s']:.2f} |")
    print(f"| PyTorch, loop only | the {len(ts)} steps | {med['torch_loop_s']:.2f} |")
    if "torch_bf16_s" in med:
        print(f"| PyTorch bf16 autocast | as above, bf16 | {med['torch_bf16_s']:.2f} |")
    if "trainer_cli_wall_s" in med:
        print(f"| `python -m pie_trainer sample` | process wall: import torch + {len(ts)} steps x batch 2 | "
              f"{med['trainer_cli_wall_s']:.2f} |")
    print()
    per_run = sorted(t / e for t, e in zip(rec["torch_s"], rec["engine_s"], strict=True))
    print(f"speed-up, same work (PyTorch masked / engine {precision}): {med['torch_s'] / med['engine_s']:.2f}x of "
          f"the medians; per run {', '.join(f'{x:.2f}x' for x in per_run)} (goal >= 1.3x)")
    if "torch_bf16_s" in med:
        per_run = sorted(t / e for t, e in zip(rec["torch_bf16_s"], rec["engine_s"], strict=True))
        print(f"speed-up against PyTorch bf16 autocast: {med['torch_bf16_s'] / med['engine_s']:.2f}x of the medians; "
              f"per run {', '.join(f'{x:.2f}x' for x in per_run)} (goal >= 1x)")
    if "engine_fp32_s" in med:
        per_run = sorted(f / e for f, e in zip(rec["engine_fp32_s"], rec["engine_s"], strict=True))
        a = np.asarray(Image.open(tmp / "engine.png").convert("RGB"), np.int16)
        b = np.asarray(Image.open(tmp / "engine-fp32.png").convert("RGB"), np.int16)
        d = np.abs(a - b)
        inside = sel > 0
        print(f"engine int8 against its fp32 graph: {med['engine_fp32_s'] / med['engine_s']:.2f}x faster "
              f"(per run {', '.join(f'{x:.2f}x' for x in per_run)}); same seed, pixels differ by at most {d.max()} "
              f"of 255, {d[inside].mean():.3f} on average inside the selection, {int((d.max(-1) > 0).sum())} "
              f"pixels differ, {d[~inside].max() if (~inside).any() else 0} outside the selection")
    if "trainer_cli_wall_s" in med:
        print(f"speed-up, process wall (trainer sample CLI / pie add): "
              f"{med['trainer_cli_wall_s'] / med['engine_wall_s']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"medians": med, "runs": rec, "work": [p["work_w"], p["work_h"]],
                                        "precision": precision,
                                        "steps": len(ts), "threads": args.threads, "machine": machine()}, indent=2))
    print(f"# images: {tmp}/engine.png, {tmp}/torch.png" + ("" if args.no_trainer_cli else f", {tmp}/trainer.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
