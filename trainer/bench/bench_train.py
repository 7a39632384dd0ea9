#!/usr/bin/env python3
"""Benchmark of the trainer on the machine at hand.

Prints steps/s of Stage I (scene crops) and Stage II (subject views + scene
replay) training steps in each mode the trainer considers (fp32; bf16 autocast
+ channels_last) and thread count, then the wall time of the presets
(`--quick` and the default) run through the real command line.

    PYTHONPATH=trainer python trainer/bench/bench_train.py [--scene IMG] [--subject IMG]
        [--threads 1,2] [--resolutions 32,64] [--steps 30] [--presets quick,default] [--device cpu]

Timings are noisy when other processes share the cores: each figure is the
median of --repeats windows, and the load average is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
TRAINER = HERE.parent
sys.path.insert(0, str(TRAINER))

from pie_trainer.core.progress import Progress  # noqa: E402
from pie_trainer.core.stop import StopFlag  # noqa: E402
from pie_trainer.core.views import SceneCrops, SubjectViews  # noqa: E402
from pie_trainer.pixel.diffusion import Schedule  # noqa: E402
from pie_trainer.pixel.model import SCENE_TOKEN, SUBJECT_TOKEN, UNetConfig  # noqa: E402
from pie_trainer.pixel.settings import PRESETS, Settings  # noqa: E402
from pie_trainer.pixel.speed import MODES, bf16_usable  # noqa: E402
from pie_trainer.pixel.train import Batch, PixelTraining  # noqa: E402

SHARED = TRAINER.parent.parent / "shared" / "data"


def default_images(tmp: Path) -> tuple[Path, Path]:
    scene, subject = SHARED / "scenes" / "mountains.png", SHARED / "instances" / "backpack.jpg"
    if scene.is_file() and subject.is_file():
        return scene, subject
    s = Image.linear_gradient("L").resize((280, 176)).convert("RGB")
    s.save(tmp / "scene.png")
    b = Image.new("RGB", (200, 240), (225, 225, 220))
    ImageDraw.Draw(b).rounded_rectangle([50, 50, 150, 210], radius=30, fill=(190, 30, 50))
    b.save(tmp / "subject.png")
    return tmp / "scene.png", tmp / "subject.png"


def make_batcher(stage: int, scene: Image.Image, subject: Image.Image,
                 res: int) -> Callable[[int, torch.Generator, int], Batch]:
    crops = SceneCrops(scene, res, 2 * res)
    views = SubjectViews(subject, None, res) if stage == 2 else None

    def batch(n: int, gen: torch.Generator, r: int) -> Batch:
        if views is None:
            return Batch(crops.sample(n, gen, r), torch.full((n,), SCENE_TOKEN), torch.ones(n, 1, 1, 1))
        k = n // 2
        xs, ws = views.sample(n - k, gen)
        return Batch(torch.cat([xs, crops.sample(k, gen)]),
                     torch.tensor([SUBJECT_TOKEN] * (n - k) + [SCENE_TOKEN] * k),
                     torch.cat([ws, torch.ones(k, 1, res, res)]))
    return batch


def steps_per_s(stage: int, mode: str, threads: int, res: int, batch: int, steps: int, repeats: int,
                device: torch.device, scene: Image.Image, subject: Image.Image) -> tuple[float, list[float]]:
    torch.set_num_threads(threads)
    s = Settings(stage=stage, steps=0, batch=batch, lr=5e-4, resolution=res, scene_short_side=2 * res,
                 preview_every=0, checkpoint_every=0)
    tr = PixelTraining(stage, s, UNetConfig(), Schedule(), device, mode, None,
                       make_batcher(stage, scene, subject, res), [], lambda step: {}, Path("/nonexistent"),
                       Progress(None), StopFlag())
    for _ in range(3):  # warm-up
        tr.train_step()
    rates = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def run_preset(args: argparse.Namespace, lib: Path, stage: str, image: Path, quick: bool) -> float:
    cmd = [sys.executable, "-m", "pie_trainer", stage, str(image), "--name", f"b{stage}{int(quick)}",
           "--library", str(lib), "--device", args.device]
    if stage == "subject":
        cmd += ["--scene", f"bscene{int(quick)}"]
    if quick:
        cmd.append("--quick")
    if args.preset_threads:
        cmd += ["--threads", str(args.preset_threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TRAINER), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    start = next(json.loads(line) for line in p.stdout.splitlines() if '"event":"start"' in line)
    print(f"  preset {'quick' if quick else 'default'} {stage}: {wall:.1f} s wall "
          f"(device {start['device']}, {start['precision']}, {start['threads']} thread(s), "
          f"{start['total']} steps; load {os.getloadavg()[0]:.1f})", flush=True)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", type=Path)
    ap.add_argument("--subject", type=Path)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (CPU)")
    ap.add_argument("--resolutions", default="32,64")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per window")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", default="quick,default", help="presets to time end to end ('' for none)")
    ap.add_argument("--preset-threads", type=int, default=None, help="--threads for the preset runs")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="pie-bench-"))
    scene_p, subject_p = default_images(tmp)
    scene_p, subject_p = args.scene or scene_p, args.subject or subject_p
    scene, subject = Image.open(scene_p).convert("RGB"), Image.open(subject_p).convert("RGB")
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {os.cpu_count()} cores")
          + f"; scene {scene_p.name}, subject {subject_p.name}; batch {args.batch}", flush=True)
    modes = [m for m in MODES if m == "fp32" or bf16_usable(device)]
    threads = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [1]
    print("stage  res  mode  threads  steps/s (median; windows)  img/s  load", flush=True)
    for res in (int(r) for r in args.resolutions.split(",")):
        for stage in (1, 2):
            for mode in modes:
                for th in threads:
                    med, all_ = steps_per_s(stage, mode, th, res, args.batch, args.steps, args.repeats, device,
                                            scene, subject)
                    windows = ", ".join(f"{r:.2f}" for r in all_)
                    print(f"{stage:>5}  {res:>3}  {mode:>4}  {th:>7}  {med:7.2f} ({windows})"
                          f"  {med * args.batch:6.1f}  {os.getloadavg()[0]:.1f}", flush=True)
    presets = [p for p in args.presets.split(",") if p]
    if presets:
        lib = tmp / "lib"
        for preset in presets:
            quick = preset == "quick"
            s1 = run_preset(args, lib, "scene", scene_p, quick)
            s2 = run_preset(args, lib, "subject", subject_p, quick)
            print(f"  preset {preset}: {PRESETS['scene'][preset]['steps']} + {PRESETS['subject'][preset]['steps']} "
                  f"steps, {s1:.1f} s + {s2:.1f} s", flush=True)


if __name__ == "__main__":
    main()
