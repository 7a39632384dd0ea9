"""The GPU benchmark's table: seconds per image, start-up cost and peak GPU memory of pie's engine
(plain and fused graphs) and of diffusers' own loop, measured on the same machine
(bench/sd_gpu/run.sh writes the inputs).

    python bench/sd_gpu/report.py machine.txt RESULTS_DIR    # pie.json, diffusers.json, memory.json, match.json
    python bench/sd_gpu/report.py --match A.png B.png         # one JSON line: how far two images are apart
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOAL_S_PER_IMAGE = 0.45   # issue 15: SD 1.5 at 512x512, 50 steps, at most 0.45 s per image ...
STRETCH_S_PER_IMAGE = 0.30
GOAL_SESSION_S = 10.0     # ... beating compiled diffusers of the same run, sessions under 10 s


def rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def match(a: Path, b: Path) -> dict:
    """Per-channel 8-bit differences of two same-sized images (the fused graphs' Add against the plain ones')."""
    import numpy as np
    from PIL import Image
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return {"a": a.name, "b": b.name, "error": f"sizes differ: {x.shape} and {y.shape}"}
    d = np.abs(x - y)
    return {"a": a.name, "b": b.name, "mean_abs_diff": round(float(d.mean()), 3), "max_abs_diff": int(d.max()),
            "share_over_8": round(float((d > 8).mean()), 4)}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--match"]:
        print(json.dumps(match(Path(argv[1]), Path(argv[2]))))
        return 0
    machine, results = Path(argv[0]), Path(argv[1])
    backbone = argv[2] if len(argv) > 2 else "sd"
    # GPU and library versions; `pie doctor`'s report follows them in the same file.
    lines = [line for line in machine.read_text().splitlines() if line.strip()][:2]
    all_rows = rows(results / "pie.json") + rows(results / "diffusers.json")
    if not all_rows:
        print("no results", file=sys.stderr)
        return 1
    memory = {r["label"]: r.get("peak_gpu_mib") for r in rows(results / "memory.json")}
    first = all_rows[0]
    print(f"Machine: {'; '.join(lines)}")
    print(f"{first.get('size')}x{first.get('size')}, {first.get('steps')} DDIM steps, guidance {first.get('guidance')} "
          f"(UNet batch 2), batch 1.\n")
    print("| variant | precision | s per image (median) | runs | start-up before the first image | peak GPU memory |")
    print("|---|---|---:|---|---|---:|")
    for r in all_rows:
        if r["variant"].startswith("pie"):
            start = f"sessions created in {r['session_s']:.1f} s"
        elif "compile_s" in r:
            start = (f"load {r['setup_s']:.1f} s + compilation {r['compile_s']:.1f} s "
                     f"(first image {r['first_image_s']:.1f} s)")
        else:
            start = f"load {r['setup_s']:.1f} s (first image {r['first_image_s']:.2f} s)"
        runs = ", ".join(f"{x:.3f}" for x in r["runs"])
        mib = memory.get(r["variant"])
        mem = f"{mib} MiB" if mib is not None else "n/a"
        print(f"| {r['variant']} | {r.get('dtype', '')} | {r['s_per_image']:.3f} | {runs} | {start} | {mem} |")
    print("\nPeak GPU memory: nvidia-smi's memory.used every 50 ms during the whole process, less what was in "
          "use before it (sessions or the model, all warm-up and timed images).")
    pies = [r for r in all_rows if r["variant"].startswith("pie")]
    pie = min(pies, key=lambda r: r["s_per_image"]) if pies else None
    by_name = {r["variant"]: r for r in all_rows}
    if pie:
        print()
        for r in all_rows:
            if r is not pie:
                print(f"- {pie['variant']} vs {r['variant']}: {r['s_per_image'] / pie['s_per_image']:.2f}x "
                      f"({'faster' if pie['s_per_image'] < r['s_per_image'] else 'slower'})")
        for plain, fused in (("pie", "pie-fused"), ("pie-cuda-graph", "pie-fused-cuda-graph")):
            if plain in by_name and fused in by_name:
                p, f = by_name[plain]["s_per_image"], by_name[fused]["s_per_image"]
                print(f"- fused graphs: {fused} {f:.3f} s against {plain} {p:.3f} s ({p / f:.2f}x)")
        if backbone == "sdxl":
            # Issue 15's SDXL goal: faster than diffusers eager, compiled reported beside it.
            eager = by_name.get("diffusers-eager")
            verdict = "not measured in this run" if eager is None else \
                ("met" if pie["s_per_image"] < eager["s_per_image"] else "not met")
            print(f"- goal (SDXL faster than diffusers eager): {verdict} ({pie['s_per_image']:.3f} s)")
            return _matches(results)
        compiled = by_name.get("diffusers-compiled")
        fast = pie["s_per_image"] <= GOAL_S_PER_IMAGE and pie["session_s"] < GOAL_SESSION_S
        beats = compiled is None or pie["s_per_image"] < compiled["s_per_image"]
        unmeasured = " (not measured in this run)" if compiled is None else ""
        stretch = "met" if pie["s_per_image"] <= STRETCH_S_PER_IMAGE else "not met"
        print(f"- goal (at most {GOAL_S_PER_IMAGE} s per image, faster than diffusers compiled{unmeasured}, "
              f"sessions under {GOAL_SESSION_S:.0f} s): {'met' if fast and beats else 'not met'} "
              f"({pie['s_per_image']:.3f} s, {pie['session_s']:.1f} s); "
              f"stretch goal {STRETCH_S_PER_IMAGE} s: {stretch}")
    return _matches(results)


def _matches(results: Path) -> int:
    for m in rows(results / "match.json"):
        if "error" in m:
            print(f"- image match {m['a']} / {m['b']}: {m['error']}")
        else:
            print(f"- image match, same seed and weights, {m['a']} against {m['b']}: mean |diff| "
                  f"{m['mean_abs_diff']} of 255, max {m['max_abs_diff']}, "
                  f"{100 * m['share_over_8']:.2f}% of values over 8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
