"""--minutes: a time budget ends training early and still writes a whole bundle that says
how many steps ran and why training stopped; bad budgets are refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bundle_problems, run_trainer

from pie_trainer.core import run as run_module
from pie_trainer.core.run import BUDGET_TAIL_S, Budget
from pie_trainer.pixel.settings import Settings
from pie_trainer.pixel.train import learning_rate


def scene_args(image: Path, lib: Path, name: str, *extra: str) -> list[str]:
    return ["scene", str(image), "--name", name, "--library", str(lib), "--resolution", "16", "--threads", "1",
            "--precision", "fp32", "--preview-every", "0", "--checkpoint-every", "0", *extra]


def test_a_budget_that_ends_training_early_still_writes_a_valid_bundle(tmp_path: Path, photos: dict) -> None:
    lib = tmp_path / "lib"
    # 0.3 min = 18 s, less what the bundle is given (BUDGET_TAIL_S and some steps' time): seconds of training,
    # far fewer than a million steps.
    r = run_trainer(*scene_args(photos["scene"], lib, "budget", "--steps", "1000000", "--minutes", "0.3",
                                "--lr-schedule", "cosine", "--warmup", "0.1"), timeout=240)
    assert r.rc == 0, r.stderr[-3000:]
    start = r.last("start")
    assert start["budget_s"] == 18.0 and start["total"] == 1000000
    prog = [e for e in r.events if e["event"] == "progress"]
    assert prog and all(e["budget_s"] == 18.0 and 0 <= e["elapsed_s"] <= 18.0 for e in prog)
    assert all(e["eta_s"] <= 18.0 for e in prog)
    bundle = Path(r.last("done")["bundle"])
    assert bundle_problems(bundle) == []
    t = json.loads((bundle / "bundle.json").read_text())["training"]
    assert t["stopped_by"] == "budget" and t["budget_s"] == 18.0 and t["steps_planned"] == 1000000
    assert 1 <= t["steps_run"] < 1000000 and t["steps_run"] == prog[-1]["step"]
    assert t["train_wall_s"] <= 18.0 - BUDGET_TAIL_S + 5.0
    # The whole run (bundle written) within the budget, give or take a loaded machine's second or two.
    assert r.last("done")["wall_s"] <= 18.0 + 3.0, r.last("done")
    assert t["probe"]["mean"] > 0 and set(t["probe"]["by_timestep"]) == {"20", "100", "250", "500", "750"}


def test_a_budget_longer_than_the_steps_changes_nothing_but_the_record(tmp_path: Path, photos: dict) -> None:
    lib = tmp_path / "lib"
    r = run_trainer(*scene_args(photos["scene"], lib, "roomy", "--steps", "5", "--minutes", "30"), timeout=240)
    assert r.rc == 0, r.stderr[-3000:]
    t = json.loads((Path(r.last("done")["bundle"]) / "bundle.json").read_text())["training"]
    assert (t["stopped_by"], t["steps_run"], t["budget_s"]) == ("steps", 5, 1800.0)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "five", ""])
def test_bad_budgets_are_refused_before_anything_is_written(tmp_path: Path, photos: dict, value: str) -> None:
    lib = tmp_path / "lib"
    r = run_trainer(*scene_args(photos["scene"], lib, "bad", "--steps", "5", "--minutes", value))
    assert r.rc == 2
    err = r.last("error")
    assert err["kind"] == "bad_input" and "--minutes" in err["message"] and "minutes" in err["message"]
    assert not lib.exists() or not any(lib.iterdir())


def test_the_budget_drives_the_schedule_to_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cosine schedule reaches its floor when the budget ends the run, not at the step count."""
    now = [0.0]
    monkeypatch.setattr(run_module.time, "monotonic", lambda: now[0])
    clock = Budget(started=0.0, budget_s=100.0, start_fraction=0.0)
    s = Settings(stage=1, steps=10**6, batch=2, lr=1e-3, resolution=16, scene_short_side=32,
                 lr_schedule="cosine", warmup=0.1, lr_min=0.05)
    now[0] = (100.0 - BUDGET_TAIL_S) / 2    # halfway through the time left for training, early in steps
    assert clock.fraction(10 / 10**6) == pytest.approx(0.5) and not clock.spent()
    now[0] = 100.0 - BUDGET_TAIL_S
    assert clock.fraction(20 / 10**6) == 1.0 and clock.spent()
    assert learning_rate(s, 1.0) == pytest.approx(0.05 * 1e-3)
    # A long preview moves the stopping point earlier; the fraction never goes back.
    clock.saw_extra(30.0)
    assert clock.fraction(30 / 10**6) == 1.0
    # A resumed run picks the schedule up where it was.
    now[0] = 0.0
    assert Budget(started=0.0, budget_s=100.0, start_fraction=0.6).fraction(0.0) == pytest.approx(0.6)
    # Without a budget the steps alone count.
    assert Budget(started=0.0, budget_s=None, start_fraction=0.0).fraction(0.25) == 0.25
    assert learning_rate(s, 0.0) == pytest.approx(1e-5)
    assert learning_rate(s, 0.1) == pytest.approx(1e-3)
    assert learning_rate(s, 0.55) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    constant = Settings(stage=1, steps=5, batch=2, lr=1e-3, resolution=16, scene_short_side=32)
    assert learning_rate(constant, 0.7) == 1e-3
