"""Cancel (SIGINT/SIGTERM) leaves a resumable checkpoint and no bundle; SIGKILL at any
moment leaves nothing the engine could mistake for a valid bundle; --force keeps the old
bundle until the new one is complete."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Run, bundle_problems, env, parse_stream, run_trainer, trainer_cmd, visible_entries


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(trainer_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


def wait_for(proc: subprocess.Popen, pred: object, timeout: float = 120) -> list[dict]:
    """Read events until pred(event) is true; returns the events read."""
    assert proc.stdout is not None
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.extend(parse_stream(line))
        if pred(seen[-1]):  # type: ignore[operator]
            return seen
        assert time.monotonic() < deadline, "timed out"
    raise AssertionError(f"the run ended before the awaited event: {seen[-3:]}")


def finish(proc: subprocess.Popen, seen: list[dict], timeout: float = 60) -> Run:
    out, err = proc.communicate(timeout=timeout)
    return Run(proc.returncode, seen + parse_stream(out), err)


def scene_args(image: Path, lib: Path, name: str, steps: int, *extra: str) -> list[str]:
    return ["scene", str(image), "--name", name, "--library", str(lib), "--steps", str(steps),
            "--resolution", "16", "--threads", "1", "--precision", "fp32", "--preview-every", "0", *extra]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cancel_writes_checkpoint_and_no_bundle(tmp_path: Path, photos: dict, sig: int) -> None:
    lib = tmp_path / "lib"
    proc = start(*scene_args(photos["scene"], lib, "c", 100000))
    seen = wait_for(proc, lambda e: e["event"] == "progress" and e["step"] >= 3)
    t0 = time.monotonic()
    proc.send_signal(sig)
    run = finish(proc, seen)
    assert time.monotonic() - t0 < 10
    assert run.rc == 3, run.stderr[-2000:]
    c = run.last("cancelled")
    assert c["stage"] == 1 and c["step"] >= 3
    assert Path(c["checkpoint"]) == lib / ".checkpoints" / "c"
    assert (lib / ".checkpoints" / "c" / "state.pt").is_file()
    assert visible_entries(lib) == []


def test_cancel_after_the_reader_died_still_writes_the_checkpoint(tmp_path: Path, photos: dict) -> None:
    # What GIMP's cancel does: it kills the plug-in, the engine's PDEATHSIG sends the
    # trainer SIGINT, and nobody reads its stdout or stderr any more.
    lib = tmp_path / "lib"
    proc = start(*scene_args(photos["scene"], lib, "d", 100000))
    wait_for(proc, lambda e: e["event"] == "progress" and e["step"] >= 3)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 3
    assert (lib / ".checkpoints" / "d" / "state.pt").is_file()
    assert visible_entries(lib) == []


def test_sigint_then_resume(tmp_path: Path, photos: dict) -> None:
    lib = tmp_path / "lib"
    proc = start(*scene_args(photos["scene"], lib, "r", 60))
    seen = wait_for(proc, lambda e: e["event"] == "progress" and e["step"] >= 2)
    proc.send_signal(signal.SIGINT)
    run = finish(proc, seen)
    assert run.rc == 3, run.stderr[-2000:]
    stopped_at = run.last("cancelled")["step"]
    assert stopped_at < 60 and visible_entries(lib) == []

    resumed = run_trainer(*scene_args(photos["scene"], lib, "r", 5, "--resume"))
    assert resumed.rc == 0, resumed.stderr[-2000:]
    first = next(e for e in resumed.events if e["event"] == "progress")
    assert first["step"] == stopped_at + 1 and first["total"] == 60   # the checkpoint's settings win
    m = json.loads((lib / "r" / "bundle.json").read_text())
    assert m["training"]["resumed"] is True and m["training"]["steps"] == 60
    assert bundle_problems(lib / "r") == []
    assert not (lib / ".checkpoints" / "r" / "state.pt").exists()


def test_resume_without_checkpoint_is_bad_input(tmp_path: Path, photos: dict) -> None:
    run = run_trainer(*scene_args(photos["scene"], tmp_path / "lib", "n", 5, "--resume"))
    assert run.rc == 2 and "no checkpoint to resume" in run.last("error")["message"]


@pytest.mark.parametrize("when", ["progress", "export", "verify", "write"])
def test_sigkill_never_leaves_a_half_bundle(tmp_path: Path, photos: dict, when: str) -> None:
    lib = tmp_path / "lib"
    steps = 100000 if when == "progress" else 4
    proc = start(*scene_args(photos["scene"], lib, "k", steps))
    seen = wait_for(proc, lambda e: e["event"] == when or e.get("phase") == when)
    proc.kill()
    run = finish(proc, seen)
    assert run.rc == -signal.SIGKILL
    for entry in visible_entries(lib):
        # Whatever is visible is a complete bundle: the final rename happened before the kill.
        assert entry.name == "k" and bundle_problems(entry) == []


def test_force_keeps_old_bundle_until_the_new_one_is_complete(own_library: Path, photos: dict) -> None:
    old = (own_library / "lake" / "bundle.json").read_bytes()
    proc = start(*scene_args(photos["scene"], own_library, "lake", 4, "--force"))
    seen = wait_for(proc, lambda e: e.get("phase") == "verify")
    proc.kill()
    finish(proc, seen)
    assert (own_library / "lake" / "bundle.json").read_bytes() == old
    assert bundle_problems(own_library / "lake") == []

    run = run_trainer(*scene_args(photos["scene"], own_library, "lake", 4, "--force"))
    assert run.rc == 0, run.stderr[-2000:]
    assert (own_library / "lake" / "bundle.json").read_bytes() != old
    assert bundle_problems(own_library / "lake") == []
    assert [p.name for p in own_library.iterdir()] in (["lake", ".checkpoints"], [".checkpoints", "lake"])


_STUCK = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from pie_trainer.core.stop import StopFlag
StopFlag(term_grace_s=float(sys.argv[2])).install()
r, w = os.pipe()
print("ready", flush=True)
while True:                      # a main thread that never looks at the flag: blocked in a
    os.write(w, b"x" * 65536)    # write to a pipe nobody reads (an orphan's stdout)
"""


def stuck_process(grace_s: float) -> subprocess.Popen:
    from conftest import TRAINER
    proc = subprocess.Popen([sys.executable, "-c", _STUCK, str(TRAINER), str(grace_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.3)   # into the blocking write
    return proc


def test_sigterm_ends_a_trainer_stuck_where_nothing_checks_the_flag() -> None:
    proc = stuck_process(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert 0.9 < time.monotonic() - t0 < 10
    assert proc.stderr is not None and "exiting now" in proc.stderr.read()


def test_a_second_signal_ends_the_trainer_at_once() -> None:
    proc = stuck_process(600.0)
    proc.send_signal(signal.SIGINT)          # stop-with-checkpoint: the stuck phase goes on ...
    time.sleep(0.5)
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)         # ... until a second signal
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 5


def test_a_second_sigint_still_lets_the_checkpoint_be_written() -> None:
    # The engine's stop, then its death signal (GIMP ending the plug-in): both SIGINT.
    proc = stuck_process(600.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.7)
    assert proc.poll() is None, "the second SIGINT ended the trainer before its checkpoint"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
