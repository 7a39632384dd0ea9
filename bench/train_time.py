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

With --candidate ARGS (further `pie learn-*` arguments, e.g. '--steps 900
--trainer-arg=--lr-schedule=cosine'; --subject-candidate for Stage II) every
preset is also learned with those arguments, alternated with the preset as it
is (scene, candidate scene, subject, candidate subject, ... for --rounds), so
both see the same load. Beside each time it prints the scores: the bundle's
probe (the EMA model's denoising error on fixed crops, noise and timesteps,
lower is better), the steps run and why training stopped, and evaluate.py's
scores of the Add (preservation, seam, harmonization, fidelity).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    ap.add_argument("--candidate", default=None, metavar="ARGS",
                    help="further learn-scene arguments of a candidate setting, timed alternated with the preset")
    ap.add_argument("--subject-candidate", default=None, metavar="ARGS",
                    help="further learn-subject arguments of the candidate (default: those of --candidate)")
    ap.add_argument("--args", default="", metavar="ARGS",
                    help="further arguments of every learn, both settings (e.g. '--steps 5' for a trial of the script)")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of preset and candidate (default 1)")
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
    colour, alpha = ev.place_subject(subj, mask, pair.selection, scene.shape[:2])
    placement = (alpha >= 0.5).astype(np.uint8) * 255
    reference = ev.naive_paste(scene, colour, alpha)
    common = shlex.split(args.args)
    arms: list[tuple[str, list[str], list[str]]] = [("as is", common, common)]
    if args.candidate is not None:
        arms.append(("candidate", common + shlex.split(args.candidate), common + shlex.split(
            args.subject_candidate if args.subject_candidate is not None else args.candidate)))
    results = []
    for preset in args.presets.split(","):
        q = ["--quick"] if preset == "quick" else []
        for rnd in range(args.rounds if len(arms) > 1 else 1):
            def tag(arm: str, preset: str = preset, rnd: int = rnd) -> str:
                return f"{preset}{'' if arm == 'as is' else '-cand'}{rnd}"
            runs: list[tuple[str, str, list[str]]] = []
            for arm, sa, _ in arms:
                runs.append((arm, "Stage I (learn-scene)", ["learn-scene", str(paths["scene"]), "--name",
                                                           f"bench-scene-{tag(arm)}", "--force", *q, *sa]))
            for arm, _, ua in arms:
                runs.append((arm, "Stage II (learn-subject)",
                             ["learn-subject", str(paths["subject"]), "--scene", f"bench-scene-{tag(arm)}", "--mask",
                              str(paths["mask"]), "--name", f"bench-subject-{tag(arm)}", "--force", *q, *ua]))
            for arm, _, _ in arms:
                runs.append((arm, "Add (defaults)",
                             ["add", str(paths["scene"]), "--selection", str(paths["selection"]), "--concept",
                              f"bench-subject-{tag(arm)}", "--out", str(work / f"add-{tag(arm)}.png")]))
            for arm, what, a in runs:
                cmd = [*nice, str(args.pie), "--json", "--library", str(lib), *a]
                before = load()
                r = run_monitored(cmd, env=env)
                if r.rc != 0:
                    print(f"{' '.join(cmd)} failed ({r.rc}):\n{r.stderr[-3000:]}", file=sys.stderr)
                    return 1
                row = {"preset": preset, "arm": arm, "round": rnd, "what": what, "args": a,
                       "wall_s": round(r.wall_s, 1), "peak_rss_mb": round(r.peak_rss_mb), "load_before": before,
                       "load_after": load(),
                       "phases": [{"phase": p, "start_s": round(s, 1), "peak_rss_mb": round(m)}
                                  for p, s, m in r.phases]}
                row["scores"] = scores_of(row, a, lib, work, tag(arm), scene, sel, reference, placement)
                results.append(row)
                print(f"  {preset:7s} {arm:9s} {what:26s} {r.wall_s:7.1f} s  peak {r.peak_rss_mb:6.0f} MB  "
                      f"{brief(row['scores'])}  ({before})", flush=True)

    print()
    print("| preset | setting | stage | wall s | peak RSS MB (pie + trainer) | scores | phases: start s / peak MB |")
    print("|---|---|---|---:|---:|---|---|")
    for res in results:
        ph = "; ".join(f"{p['phase']} @{p['start_s']:.0f}s {p['peak_rss_mb']} MB" for p in res["phases"]
                       if len(res["phases"]) > 1) or "—"
        print(f"| {res['preset']} | {res['arm']} | {res['what']} | {res['wall_s']:.1f} | {res['peak_rss_mb']} | "
              f"{brief(res['scores'])} | {ph} |")
    if len(arms) > 1:
        print()
        print("candidate / as is, per round (wall time of each stage):")
        for res in results:
            if res["arm"] != "candidate":
                continue
            base = next(r for r in results if r["arm"] == "as is" and r["what"] == res["what"]
                        and r["preset"] == res["preset"] and r["round"] == res["round"])
            print(f"  {res['preset']} round {res['round']} {res['what']}: {res['wall_s'] / base['wall_s']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "pair": pair.name, "results": results}, indent=2))
    return 0


def scores_of(row: dict[str, Any], a: list[str], lib: Path, work: Path, tag: str, scene: np.ndarray,
              sel: np.ndarray, reference: np.ndarray, placement: np.ndarray) -> dict[str, Any]:
    """A learn's bundle record (probe, steps run, why it stopped); an Add's evaluate.py scores."""
    if a[0] == "add":
        img = ev.load_rgb(work / f"add-{tag}.png")
        return {k: round(float(v), 4) for k, v in ev.score_all(img, scene, sel, reference, placement, None, 1).items()}
    name = a[a.index("--name") + 1]
    t = json.loads((lib / name / "bundle.json").read_text()).get("training", {})
    return {"probe": (t.get("probe") or {}).get("mean"), "steps_run": t.get("steps_run"),
            "stopped_by": t.get("stopped_by"), "train_wall_s": t.get("train_wall_s")}


def brief(sc: dict[str, Any]) -> str:
    if "probe" in sc:
        probe = "?" if sc["probe"] is None else f"{sc['probe']:.5f}"
        return f"probe {probe}, {sc['steps_run']} steps ({sc['stopped_by']})"
    return ", ".join(f"{k} {v:.3f}" for k, v in sc.items())


if __name__ == "__main__":
    sys.exit(main())
