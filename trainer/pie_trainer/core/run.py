"""The run skeleton: one training run of any backbone, from its checkpoint folder
to the committed bundle.

`execute` owns what every backbone does the same way: the checkpoint folder and
its meta.json, resuming, the `start`, `phase`, `progress` and `done` events, the
step loop with its rate, thread watching, periodic checkpoints and stopping, and
the staging folder the bundle is built in. A backbone gives a `Job` (what to
learn and how to write its bundle) whose `begin` returns its `Training` (the
model being trained, one optimisation step at a time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from . import bundle as bd
from . import checkpoint as ck
from .device import RateWatcher
from .errors import Cancelled
from .library import checkpoint_dir
from .progress import Progress, log
from .resume import check_same_run
from .stop import StopFlag

RATE_WINDOW = 20   # steps the reported rate is averaged over
# With a time budget, training stops early enough for the bundle to be written within it:
# BUDGET_TAIL_S, plus the longest work seen between steps (a preview grid; the bundle draws
# one too), plus BUDGET_TAIL_STEPS steps' time (the export, the probe, the check with ONNX
# Runtime: they slow down with the machine as the steps do).
BUDGET_TAIL_S = 5.0
BUDGET_TAIL_STEPS = 30


@dataclass
class Runtime:
    """How to run: chosen from the command line, not recorded in the checkpoint."""
    device: torch.device
    threads: int
    force: bool
    budget_s: float | None = None   # --minutes, in seconds: the whole run, bundle included


def budget_seconds(args: Any) -> float | None:
    """--minutes as seconds (None: no budget); the parser has refused anything not positive and finite."""
    minutes = getattr(args, "minutes", None)
    return None if minutes is None else float(minutes) * 60.0


class Settings(Protocol):
    """What the skeleton reads of a backbone's settings."""
    steps: int
    checkpoint_every: int

    def to_dict(self) -> dict[str, Any]: ...


class Training(Protocol):
    """One backbone's model in training; everything random comes from its own generator."""
    step: int
    loss_avg: float
    # How far the run is, 0..1, set before each step: the larger of the steps done and the
    # time budget used, for schedules that must end with the run whichever ends it.
    fraction: float

    def train_step(self) -> None:
        """One optimisation step (step += 1, loss_avg updated)."""

    def between_steps(self) -> bool:
        """Work after a step other than a checkpoint (a preview); True when it did some."""

    def save_checkpoint(self) -> None:
        """Write the resumable state into the run's checkpoint folder."""


@dataclass
class Run:
    """One run as the skeleton sees it, handed to the job for writing its bundle."""
    rt: Runtime
    progress: Progress
    stop: StopFlag
    checkpoints: Path            # <library>/.checkpoints/<name>
    saved: dict[str, Any] | None  # the checkpoint resumed from
    precision: str
    started: float               # time.monotonic() at the start
    trained: float = 0.0         # ... when the last step was done
    final_threads: int = 0       # threads after the rate watcher's adjustments
    stopped_by: str = "steps"    # what ended training: "steps" (all done) or "budget" (--minutes)
    first_step: int = 0          # the step this invocation began at (> 0 when resumed)
    last_step: int = 0

    def record(self, planned: int) -> dict[str, Any]:
        """What the bundle's training record says of how the run ended."""
        return {"steps_planned": planned, "steps_run": self.last_step, "stopped_by": self.stopped_by,
                "budget_s": self.rt.budget_s}

    def cancel(self, stage: int, training: Training) -> Cancelled:
        """Stopped: keep a checkpoint at the current step; the caller raises what this returns."""
        training.save_checkpoint()
        return Cancelled(stage, training.step, str(self.checkpoints))


class Job(Protocol):
    """What one backbone learns in a run and how it writes the bundle."""
    stage: int
    name: str
    library: Path
    meta: dict[str, Any]                  # identity of the run, checked on --resume
    concepts: list[dict[str, Any]]        # the last one is the concept this run learns

    @property
    def settings(self) -> Settings: ...

    def precision(self, rt: Runtime, progress: Progress) -> str:
        """The precision the steps run in (the `start` event's `precision`); may time a few steps first."""

    def begin(self, run: Run) -> Training:
        """The model to train, at step 0 or restored from `run.saved`."""

    def describe(self, step: int) -> str:
        """The `train` phase's message."""

    def write_bundle(self, training: Training, staging: bd.Staging, run: Run) -> Path:
        """Export, verify and commit the bundle (phases export, verify, write); returns its folder."""

    def finished(self, training: Training, run: Run) -> None:
        """After the commit: what stays in the checkpoint folder (state.pt and meta.json go)."""


def execute(job: Job, rt: Runtime, progress: Progress, stop: StopFlag, saved: dict[str, Any] | None) -> Path:
    """Train `job` (from `saved`, the checkpoint of a stopped run, when resuming) and write its bundle."""
    started = time.monotonic()
    ckdir = checkpoint_dir(job.library, job.name)
    if saved is not None:
        check_same_run(saved, job.meta, ckdir)
        log(f"resuming {job.name!r} at step {saved['step']} of {job.settings.steps} "
            "(the checkpoint's settings are used)")
    elif ckdir.exists():
        for f in (ck.STATE, ck.META):
            (ckdir / f).unlink(missing_ok=True)
    ckdir.mkdir(parents=True, exist_ok=True)
    ck.save_json({**job.meta, "identifier": job.concepts[-1]["identifier"]}, ckdir / ck.META)

    torch.set_num_threads(rt.threads)
    precision = job.precision(rt, progress)
    s = job.settings
    # `start` before the model is built: a large base checkpoint takes a while to load.
    budget = {} if rt.budget_s is None else {"budget_s": round(rt.budget_s, 1)}
    progress.emit("start", stage=job.stage, name=job.name, total=s.steps, device=str(rt.device),
                  precision=precision, threads=rt.threads, **budget)
    run = Run(rt=rt, progress=progress, stop=stop, checkpoints=ckdir, saved=saved, precision=precision,
              started=started)
    training = job.begin(run)
    progress.phase(job.stage, "train", job.describe(training.step))
    run.final_threads = _steps(job, training, run)
    run.trained = time.monotonic()

    bd.remove_stale_partials(job.library, job.name)
    with bd.Staging(job.library, job.name) as staging:
        folder = job.write_bundle(training, staging, run)
    job.finished(training, run)
    for f in (ck.STATE, ck.META):
        (ckdir / f).unlink(missing_ok=True)
    try:
        ckdir.rmdir()   # only when nothing else (weights, previews) stays in it
    except OSError:
        pass
    progress.emit("done", stage=job.stage, name=job.name, bundle=str(folder),
                  wall_s=round(time.monotonic() - started, 2))
    return folder


def _steps(job: Job, training: Training, run: Run) -> int:
    """Runs the steps left; raises Cancelled after a checkpoint when stopped. Returns the threads in use."""
    s = job.settings
    watcher = RateWatcher(run.rt.threads, run.rt.device)
    recent: list[float] = []
    last = time.perf_counter()
    run.first_step = run.last_step = training.step
    clock = Budget(run.started, run.rt.budget_s, training.step / max(s.steps, 1))
    while training.step < s.steps:
        if run.stop():
            raise run.cancel(job.stage, training)
        # At least one step: a bundle of the untrained model would be no use to anyone.
        if clock.spent() and training.step > run.first_step:
            run.stopped_by = "budget"
            # The last throttled event may lag: say where training ended.
            run.progress.progress(job.stage, training.step, s.steps, training.loss_avg, 0.0, force=True,
                                  budget=clock.report())
            log(f"the time budget ({(clock.budget_s or 0.0) / 60:g} min) ends training at step {training.step} "
                f"of {s.steps}")
            break
        training.fraction = clock.fraction(training.step / max(s.steps, 1))
        t0 = time.perf_counter()
        training.train_step()
        clock.saw_step(time.perf_counter() - t0)
        msg = watcher.add(time.perf_counter() - t0)
        if msg:
            log(msg)
        now = time.perf_counter()
        recent = (recent + [now - last])[-RATE_WINDOW:]
        last = now
        rate = len(recent) / max(sum(recent), 1e-9)
        step = run.last_step = training.step
        run.progress.progress(job.stage, step, s.steps, training.loss_avg, rate, force=step == s.steps,
                              budget=clock.report())
        # Time spent on previews and checkpoints is not training: it leaves the rate out.
        extra = time.perf_counter()
        if step < s.steps and training.between_steps():
            last = time.perf_counter()
        if s.checkpoint_every > 0 and step % s.checkpoint_every == 0 and step < s.steps:
            training.save_checkpoint()
            last = time.perf_counter()
        clock.saw_extra(time.perf_counter() - extra)
    return watcher.threads


class Budget:
    """--minutes: when training must stop, and how much of the budget is used.

    The budget covers the run from the trainer's start (its imports, a few seconds, come
    before); training stops early enough for the bundle (see BUDGET_TAIL_S). The
    time fraction runs from where a resumed run began (`start_fraction`) to 1 at that
    stopping point, so a schedule that follows `fraction` ends as the budget does.
    """

    def __init__(self, started: float, budget_s: float | None, start_fraction: float) -> None:
        self.started, self.budget_s = started, budget_s
        self.train_start = time.monotonic()
        self.start_fraction = min(max(start_fraction, 0.0), 1.0)
        self.longest_extra = 0.0
        self.step_s: list[float] = []
        self._fraction = 0.0

    def saw_extra(self, seconds: float) -> None:
        self.longest_extra = max(self.longest_extra, seconds)

    def saw_step(self, seconds: float) -> None:
        self.step_s = (self.step_s + [seconds])[-RATE_WINDOW:]

    def stop_at(self) -> float:
        assert self.budget_s is not None
        step = sorted(self.step_s)[len(self.step_s) // 2] if self.step_s else 0.0
        return self.started + self.budget_s - BUDGET_TAIL_S - self.longest_extra - BUDGET_TAIL_STEPS * step

    def spent(self) -> bool:
        return self.budget_s is not None and time.monotonic() >= self.stop_at()

    def fraction(self, step_fraction: float) -> float:
        f = step_fraction
        if self.budget_s is not None:
            span = max(self.stop_at() - self.train_start, 1e-6)
            used = min(max((time.monotonic() - self.train_start) / span, 0.0), 1.0)
            f = max(f, self.start_fraction + (1.0 - self.start_fraction) * used)
        # Never backwards (the stopping point moves earlier when a long preview is seen).
        self._fraction = max(self._fraction, min(f, 1.0))
        return self._fraction

    def report(self) -> tuple[float, float] | None:
        """(seconds used, budget in seconds) for the progress events; None without a budget."""
        if self.budget_s is None:
            return None
        return time.monotonic() - self.started, self.budget_s
