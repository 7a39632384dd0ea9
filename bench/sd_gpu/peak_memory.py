"""Runs a command and records the GPU memory it took at its peak: `nvidia-smi`'s memory.used,
sampled every 50 ms while the command runs, less what was in use before it started. The same
measure for pie (ONNX Runtime's CUDA arena) and for diffusers (PyTorch's caching allocator):
what each holds of the GPU, not what its tensors need at the least.

    python bench/sd_gpu/peak_memory.py --label NAME --out memory.json -- COMMAND [ARGS...]

The command's stdout and stderr pass through and its exit status is returned; one JSON line
{"label", "peak_gpu_mib", "baseline_mib", "samples"} is appended to --out (peak null where there
is no nvidia-smi, as on a CPU machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

INTERVAL_MS = 50


def used_mib() -> int | None:
    """The GPU's memory in use now (the first GPU), or None without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def sample(proc: subprocess.Popen[bytes], into: list[int]) -> None:
    """nvidia-smi's own loop (-lms), one value a line, until stopped."""
    for line in proc.stdout or []:
        try:
            into.append(int(line.split()[0]))
        except (ValueError, IndexError):
            continue


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", required=True, help="what the command measures, e.g. 'pie fused'")
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file to append the result to")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    a = ap.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no command given")
    baseline = used_mib() if shutil.which("nvidia-smi") else None
    samples: list[int] = []
    smi = None
    if baseline is not None:
        smi = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                f"--loop-ms={INTERVAL_MS}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=sample, args=(smi, samples), daemon=True).start()
    try:
        rc = subprocess.call(cmd)
    finally:
        if smi is not None:
            smi.terminate()
            smi.wait(timeout=10)
    peak = max(samples) - baseline if samples and baseline is not None else None
    with a.out.open("a") as f:
        f.write(json.dumps({"label": a.label, "peak_gpu_mib": peak, "baseline_mib": baseline,
                            "samples": len(samples)}) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
