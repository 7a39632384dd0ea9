#!/usr/bin/env python3
"""Stage I and Stage II wall time and peak memory, per preset and per phase, plus one Add.

Run with the eval environment's python (psutil, numpy, pillow, OpenCV):

  PY=$(bash build/python-env.sh eval-venv tests/eval/requirements.txt 800 "cv2, skimage, numpy, PIL")
  $PY bench/train_time.py --presets quick,default

For each preset: `pie --json learn-scene`, `pie --json learn-subject --mask`
and `pie --json add`, on one pair of tests/eval/evaluate.py (default
seascape+dog from ../shared/data, else the first registry pair). Memory is the
largest sum of RSS over pie and all its children (the trainer), sampled every
50 ms with psutil; a phase is what the trainer's progress stream announces
(benchmark, train, export, verify, write), passed on by `pie --json`.
The presets run one after the other, so their figures see different load: the
load average is printed with each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests/eval"))
import evaluate as ev  # noqa: E402
from common import load, machine, pie_env, run_monitored  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="quick,default", help="comma-separated (default quick,default)")
    ap.add_argument("--pair", default=None, help="an evaluate.py pair (default seascape+dog, or the first one)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--pie", type=Path, default=ROOT / "target/release/pie")
    ap.add_argument("--library", type=Path, default=None, help="concept library (default: a temporary one)")
    ap.add_argument("--nice", type=int, default=10, help="nice level for pie (0: none; default 10)")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the inputs (scene.png, subject.png, mask.png, selection.png) and Add's results "
                         "(default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    pairs = ev.shared_pairs(args.data) if args.data.is_dir() else ev.registry_pairs()
    pair = next((p for p in pairs if p.name == (args.pair or "seascape+dog")), pairs[0])
    lib = (args.library or Path(tempfile.mkdtemp(prefix="pie-bench-lib."))).resolve()
    lib.mkdir(parents=True, exist_ok=True)
    env = pie_env(lib)
    work = (args.work or Path(tempfile.mkdtemp(prefix="pie-bench-train."))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    scene = ev.load_rgb(pair.scene) if pair.scene else ev.skimage_photo(pair.skimage_scene, pair.scene_short_side)
    subj = ev.load_rgb(pair.subject.path) if pair.subject.path else ev.skimage_photo(pair.subject.skimage_name)
    mask = ev.subject_mask(subj, pair.subject)
    sel = ev.rect_mask(scene.shape[:2], pair.selection)
    paths = {k: work / f"{k}.png" for k in ("scene", "subject", "mask", "selection")}
    for k, pixels in zip(paths, (scene, subj, mask, sel), strict=True):
        Image.fromarray(np.ascontiguousarray(pixels)).save(paths[k])

    print(f"# train_time: pair {pair.name}, scene {scene.shape[1]}x{scene.shape[0]}, subject "
          f"{subj.shape[1]}x{subj.shape[0]}")
    print(f"# {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# library {lib}, inputs in {work}")
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    results = []
    for preset in args.presets.split(","):
        q = ["--quick"] if preset == "quick" else []
        sname, uname = f"bench-scene-{preset}", f"bench-subject-{preset}"
        steps = [
            ("Stage I (learn-scene)", ["learn-scene", str(paths["scene"]), "--name", sname, "--force", *q]),
            ("Stage II (learn-subject)", ["learn-subject", str(paths["subject"]), "--scene", sname, "--mask",
                                          str(paths["mask"]), "--name", uname, "--force", *q]),
            ("Add (defaults)", ["add", str(paths["scene"]), "--selection", str(paths["selection"]), "--concept",
                                uname, "--out", str(work / f"add-{preset}.png")]),
        ]
        for what, a in steps:
            cmd = [*nice, str(args.pie), "--json", "--library", str(lib), *a]
            before = load()
            r = run_monitored(cmd, env=env)
            if r.rc != 0:
                print(f"{' '.join(cmd)} failed ({r.rc}):\n{r.stderr[-3000:]}", file=sys.stderr)
                return 1
            row = {"preset": preset, "what": what, "wall_s": round(r.wall_s, 1),
                   "peak_rss_mb": round(r.peak_rss_mb), "load_before": before, "load_after": load(),
                   "phases": [{"phase": p, "start_s": round(s, 1), "peak_rss_mb": round(m)} for p, s, m in r.phases]}
            results.append(row)
            print(f"  {preset:7s} {what:26s} {r.wall_s:7.1f} s  peak {r.peak_rss_mb:6.0f} MB  ({before})",
                  flush=True)

    print()
    print("| preset | stage | wall s | peak RSS MB (pie + trainer) | phases: start s / peak MB |")
    print("|---|---|---:|---:|---|")
    for res in results:
        ph = "; ".join(f"{p['phase']} @{p['start_s']:.0f}s {p['peak_rss_mb']} MB" for p in res["phases"]
                       if len(res["phases"]) > 1) or "—"
        print(f"| {res['preset']} | {res['what']} | {res['wall_s']:.1f} | {res['peak_rss_mb']} | {ph} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "pair": pair.name, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
