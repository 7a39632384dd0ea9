"""Shared by the bench/ scripts and tests/eval/evaluate.py: the pie environment, running
a command while sampling the peak memory of its whole process tree, and machine facts.

Only the standard library and psutil (tests/eval/requirements.txt).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


def sh_last_line(cmd: str) -> str:
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {p.stderr[-2000:]}")
    return p.stdout.strip().splitlines()[-1]


def pie_env(library: Path, ort_dylib: str | None = None, trainer_python: str | None = None,
            trainer_path: Path | None = None) -> dict[str, str]:
    """The environment `pie` needs: ORT_DYLIB_PATH (build/onnxruntime.sh cpu), PIE_TRAINER_PYTHON
    (build/trainer-env.sh), PIE_TRAINER_PATH (trainer/) and PIE_HOME (the given library)."""
    env = dict(os.environ)
    env["ORT_DYLIB_PATH"] = ort_dylib or env.get("ORT_DYLIB_PATH") or sh_last_line("bash build/onnxruntime.sh cpu")
    env["PIE_TRAINER_PYTHON"] = (trainer_python or env.get("PIE_TRAINER_PYTHON")
                                 or sh_last_line("bash build/trainer-env.sh"))
    env["PIE_TRAINER_PATH"] = str(trainer_path or ROOT / "trainer")
    env["PIE_HOME"] = str(library)
    return env


@dataclass
class Run:
    cmd: list[str]
    rc: int
    wall_s: float
    peak_rss_mb: float                 # largest sum of RSS over the process and all its descendants
    stdout: list[str]
    stderr: str
    # (label, seconds since start, peak RSS MB while it was the current phase)
    phases: list[tuple[str, float, float]] = field(default_factory=list)

    def json_events(self) -> list[dict]:
        out = []
        for line in self.stdout:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, dict):
                out.append(v)
        return out


def _tree_rss(proc: Any) -> int:
    import psutil
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def phase_of(line: str) -> str | None:
    """A phase label from a `pie --json` line: a progress event with no fraction (the trainer's phase
    messages and the engine's own notes), else None."""
    try:
        v = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(v, dict) and v.get("event") == "progress" and v.get("text")):
        return None
    text = str(v["text"])
    if v.get("fraction") is None:
        return None if text.startswith("preview:") else text
    if text.startswith("stage ") and ": training on " in text:  # the engine's line for the trainer's start event
        return "training (" + text.split(": ", 1)[1] + ")"
    return None


def run_monitored(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.05,
                  cwd: Path | None = None, log: IO[str] | None = None) -> Run:
    """Runs `cmd`, reading its stdout line by line, sampling the RSS of its process tree every `interval` s.
    Phases: a new phase begins at each line for which phase_of() gives a label (the first is 'start')."""
    import psutil
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stderr is not None   # both are pipes
    out, err = p.stdout, p.stderr
    proc = psutil.Process(p.pid)
    peak = [0]
    phases: list[list] = [["start", 0.0, 0]]
    lock = threading.Lock()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = _tree_rss(proc)
            with lock:
                peak[0] = max(peak[0], rss)
                phases[-1][2] = max(phases[-1][2], rss)
            stop.wait(interval)

    err_chunks: list[str] = []
    t_err = threading.Thread(target=lambda: err_chunks.append(err.read()), daemon=True)
    t_mon = threading.Thread(target=sample, daemon=True)
    t_err.start()
    t_mon.start()
    lines = []
    for line in out:
        line = line.rstrip("\n")
        lines.append(line)
        if log is not None:
            log.write(line + "\n")
        label = phase_of(line)
        if label is not None:
            with lock:
                if phases[-1][0] != label:
                    phases.append([label, time.perf_counter() - t0, _tree_rss(proc)])
    rc = p.wait()
    wall = time.perf_counter() - t0
    stop.set()
    t_mon.join()
    t_err.join()
    stderr = "".join(err_chunks)
    if log is not None:
        log.write(stderr)
    mb = 2 ** 20
    return Run(cmd, rc, wall, peak[0] / mb, lines, stderr, [(a, b, c / mb) for a, b, c in phases])


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def load() -> str:
    try:
        return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load ?"


def show(cmd: list[str]) -> str:
    return shlex.join(cmd)
