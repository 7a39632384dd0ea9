#!/usr/bin/env python3
"""Today's pixel-unet training settings against candidates, alternated in one process.

Every setting trains its own model on the same scene (Stage I), then, from its
own scene model, on the same subject (Stage II). The settings take turns every
--chunk steps, so that load from other processes falls on all of them alike;
each setting's time is the sum of its own steps' wall time. At the end of each
stage every setting's EMA model gets the probe (`PixelTraining.probe`: masked
ε MSE on fixed crops, noise and timesteps; lower is better) and a preview grid.

    PYTHONPATH=trainer python trainer/bench/compare_settings.py --scene IMG [--exclude MASK]
        [--subject IMG --mask MASK] --candidate 'NAME:steps=900,lr=1e-3,lr_schedule=cosine,warmup=0.05'
        [--subject-candidate 'NAME:steps=600,...'] [--threads 1] [--out DIR]

A candidate is `NAME:key=value,...` over pixel.settings.Settings' fields; the
baseline is the default preset. Prints the load average with each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pie_trainer.core.progress import Progress  # noqa: E402
from pie_trainer.core.stop import StopFlag  # noqa: E402
from pie_trainer.core.views import SceneCrops, SubjectViews, resize_short_side  # noqa: E402
from pie_trainer.pixel.diffusion import Schedule  # noqa: E402
from pie_trainer.pixel.model import SCENE_TOKEN, SUBJECT_TOKEN, UNetConfig  # noqa: E402
from pie_trainer.pixel.settings import PRESETS, Settings  # noqa: E402
from pie_trainer.pixel.speed import bf16_usable  # noqa: E402
from pie_trainer.pixel.train import Batch, PixelTraining, preview_grid  # noqa: E402

Batcher = Callable[[int, torch.Generator, int], Batch]


@dataclass
class Arm:
    name: str
    settings: Settings
    training: PixelTraining
    busy_s: float = 0.0
    data_s: float = 0.0


def parse_candidate(text: str, base: Settings) -> tuple[str, Settings]:
    name, _, spec = text.partition(":")
    kinds = {f.name: f.type for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown setting {key!r} in {text!r}")
        kind = kinds[key]
        changes[key] = value if kind in ("str", str) else float(value) if kind in ("float", float) else int(value)
    return name, replace(base, **changes)


def scene_batcher(scene: Image.Image, res: int, short: int, exclude: np.ndarray | None) -> Batcher:
    crops = SceneCrops(scene, res, short, exclude)

    def batch(n: int, gen: torch.Generator, r: int) -> Batch:
        x, w = crops.sample_weighted(n, gen, r)
        return Batch(x, torch.full((n,), SCENE_TOKEN, dtype=torch.int64), w)
    return batch


def subject_batcher(scene: Image.Image, subject: Image.Image, mask: np.ndarray | None, res: int, short: int,
                    exclude: np.ndarray | None) -> Batcher:
    crops = SceneCrops(scene, res, short, exclude)
    views = SubjectViews(subject, mask, res)

    def batch(n: int, gen: torch.Generator, r: int) -> Batch:
        k = min(n - 1, max(1, round(n * 0.5)))
        xs, ws = views.sample(n - k, gen)
        xc, wc = crops.sample_weighted(k, gen)
        token = torch.tensor([SUBJECT_TOKEN] * (n - k) + [SCENE_TOKEN] * k, dtype=torch.int64)
        return Batch(torch.cat([xs, xc]), token, torch.cat([ws, wc]))
    return batch


def load() -> str:
    return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_stage(arms: list[Arm], chunk: int, label: str) -> None:
    """Alternates the arms `chunk` steps at a time until each has done its steps."""
    while any(a.training.step < a.settings.steps for a in arms):
        for a in arms:
            tr, s = a.training, a.settings
            end = min(s.steps, tr.step + chunk)
            while tr.step < end:
                tr.fraction = tr.step / s.steps
                t0 = time.perf_counter()
                tr.train_step()
                a.busy_s += time.perf_counter() - t0
        done = ", ".join(f"{a.name} {a.training.step}/{a.settings.steps} {a.busy_s:.0f}s" for a in arms)
        print(f"  {label}: {done} ({load()})", flush=True)


def timed_batcher(batcher: Batcher, arm_ref: list[Arm]) -> Batcher:
    def batch(n: int, gen: torch.Generator, r: int) -> Batch:
        t0 = time.perf_counter()
        b = batcher(n, gen, r)
        if arm_ref:
            arm_ref[0].data_s += time.perf_counter() - t0
        return b
    return batch


def make_arm(name: str, s: Settings, stage: int, batcher: Batcher, init: dict[str, torch.Tensor] | None,
             mode: str, config: UNetConfig) -> Arm:
    ref: list[Arm] = []
    tr = PixelTraining(stage, s, config, Schedule(), torch.device("cpu"), mode, init, timed_batcher(batcher, ref),
                       [], lambda step: {}, Path("/nonexistent"), Progress(None), StopFlag())
    arm = Arm(name, s, tr)
    ref.append(arm)
    return arm


def report(arms: list[Arm], stage: int, out: Path, tokens: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for a in arms:
        probe = a.training.probe()
        s = a.settings
        preview_grid(a.training.ema, tokens, s.resolution, Schedule(), s.seed, torch.device("cpu")).save(
            out / f"preview-stage{stage}-{a.name}.png")
        rows.append({"stage": stage, "arm": a.name, "steps": s.steps, "train_s": round(a.busy_s, 1),
                     "data_share": round(a.data_s / max(a.busy_s, 1e-9), 4), "probe": probe,
                     "settings": {k: v for k, v in s.to_dict().items() if k not in ("stage",)}})
    base = rows[0]
    print(f"\nStage {stage} ({load()}):")
    print("| setting | steps | train s | time / default | data share | probe mean | probe by t |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        by_t = " ".join(f"{t}:{v:.4f}" for t, v in r["probe"]["by_timestep"].items())
        print(f"| {r['arm']} | {r['steps']} | {r['train_s']:.1f} | {r['train_s'] / base['train_s']:.2f} | "
              f"{r['data_share']:.1%} | {r['probe']['mean']:.5f} | {by_t} |", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", type=Path, required=True)
    ap.add_argument("--exclude", type=Path, default=None, help="Stage I exclude mask (white = never learned)")
    ap.add_argument("--subject", type=Path, default=None)
    ap.add_argument("--mask", type=Path, default=None)
    ap.add_argument("--candidate", action="append", default=[], help="NAME:key=value,... (Stage I)")
    ap.add_argument("--subject-candidate", action="append", default=[],
                    help="NAME:key=value,... (Stage II); matched to --candidate by position")
    ap.add_argument("--baseline", default="", help="key=value,... changes to the default preset (a short trial)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/pie-compare"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    mode = args.precision if args.precision != "auto" else ("bf16" if bf16_usable(torch.device("cpu")) else "fp32")
    d = PRESETS["scene"]["default"]
    res = d["resolution"]
    base1 = Settings(stage=1, steps=d["steps"], batch=d["batch"], lr=d["lr"], resolution=res,
                     scene_short_side=2 * res, preview_every=0, checkpoint_every=0)
    scene = Image.open(args.scene).convert("RGB")
    exclude = None
    if args.exclude is not None:
        exclude = np.asarray(Image.open(args.exclude).convert("L")) > 127
    print(f"# compare_settings: scene {args.scene.name} {scene.size}, {args.threads} thread(s), {mode}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load()}", flush=True)
    config = UNetConfig(base_channels=base1.base_channels)
    base1 = parse_candidate(f"default:{args.baseline}", base1)[1]
    specs = [("default", base1)] + [parse_candidate(c, base1) for c in args.candidate]
    b1 = scene_batcher(scene, res, 2 * res, exclude)
    arms = [make_arm(n, s, 1, b1, None, mode, config) for n, s in specs]
    run_stage(arms, args.chunk, "Stage I")
    rows = report(arms, 1, args.out, [SCENE_TOKEN])
    if args.subject is not None:
        ds = PRESETS["subject"]["default"]
        base2 = Settings(stage=2, steps=ds["steps"], batch=ds["batch"], lr=ds["lr"], resolution=res,
                         scene_short_side=2 * res, preview_every=0, checkpoint_every=0)
        base2 = parse_candidate(f"default:{args.baseline}", base2)[1]
        specs2 = [("default", base2)] + [parse_candidate(c, base2) for c in args.subject_candidate]
        subject = Image.open(args.subject).convert("RGB")
        mask = None if args.mask is None else np.asarray(Image.open(args.mask).convert("L"), np.float32) / 255.0
        learned = resize_short_side(SceneCrops(scene, res, 2 * res, exclude).scene, 2 * res)
        ex2 = None if exclude is None else np.asarray(
            Image.fromarray(exclude.astype(np.uint8) * 255).resize(learned.size, Image.Resampling.BOX)) > 0
        b2 = subject_batcher(learned, subject, mask, res, 2 * res, ex2)
        # Each Stage II grows from its own Stage I (the candidate's from the candidate's).
        parents = {a.name: a.training.ema.state_dict() for a in arms}
        arms2 = [make_arm(n, s, 2, b2, parents.get(n, parents["default"]), mode, config) for n, s in specs2]
        run_stage(arms2, args.chunk, "Stage II")
        rows += report(arms2, 2, args.out, [SCENE_TOKEN, SUBJECT_TOKEN])
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {args.out / 'results.json'} and the preview grids", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
