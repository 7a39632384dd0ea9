"""The GPU benchmark's table: seconds per image and start-up cost of pie's engine and of diffusers'
own loop, measured in the same run on the same machine (bench/sd_gpu/run.sh writes the inputs).

    python bench/sd_gpu/report.py machine.txt pie.json diffusers.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOAL_S_PER_IMAGE = 0.30   # issue 6: pie under 0.30 s per image on an H200 ...
GOAL_SESSION_S = 10.0     # ... with no wait beyond session creation, under 10 s


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def main(argv: list[str]) -> int:
    machine, *results = (Path(a) for a in argv)
    # GPU and library versions; `pie doctor`'s report follows them in the same file.
    lines = [line for line in machine.read_text().splitlines() if line.strip()][:2]
    all_rows = [r for p in results for r in rows(p)]
    if not all_rows:
        print("no results", file=sys.stderr)
        return 1
    first = all_rows[0]
    print(f"Machine: {'; '.join(lines)}")
    print(f"{first.get('size')}x{first.get('size')}, {first.get('steps')} DDIM steps, guidance {first.get('guidance')} "
          f"(UNet batch 2), batch 1.\n")
    print("| variant | precision | s per image (median) | runs | start-up before the first image |")
    print("|---|---|---:|---|---|")
    for r in all_rows:
        if r["variant"].startswith("pie"):
            start = f"sessions created in {r['session_s']:.1f} s"
        elif "compile_s" in r:
            start = (f"load {r['setup_s']:.1f} s + compilation {r['compile_s']:.1f} s "
                     f"(first image {r['first_image_s']:.1f} s)")
        else:
            start = f"load {r['setup_s']:.1f} s (first image {r['first_image_s']:.2f} s)"
        runs = ", ".join(f"{x:.3f}" for x in r["runs"])
        print(f"| {r['variant']} | {r.get('dtype', '')} | {r['s_per_image']:.3f} | {runs} | {start} |")
    pies = [r for r in all_rows if r["variant"].startswith("pie")]
    pie = min(pies, key=lambda r: r["s_per_image"]) if pies else None
    if pie:
        print()
        for r in all_rows:
            if r is not pie:
                print(f"- {pie['variant']} vs {r['variant']}: {r['s_per_image'] / pie['s_per_image']:.2f}x "
                      f"({'faster' if pie['s_per_image'] < r['s_per_image'] else 'slower'})")
        ok = pie["s_per_image"] < GOAL_S_PER_IMAGE and pie["session_s"] < GOAL_SESSION_S
        print(f"- goal (under {GOAL_S_PER_IMAGE} s per image, sessions under {GOAL_SESSION_S:.0f} s): "
              f"{'met' if ok else 'not met'} ({pie['s_per_image']:.3f} s, {pie['session_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
