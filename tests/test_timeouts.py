"""Stage deadlines (compute.stage_timeout_s, sppo.timeouts): a stage past it fails naming itself and the field,
is not retried, and what it launched is stopped. The stage here is the train stage's real launcher
(sppo.train_distributed._stream) running a job that hangs, as a job waiting on a dead builder's lock does."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sppo.config import load_recipe
from sppo.timeouts import StageTimeout, stage_deadline
from sppo.train_distributed import _stream

# A job that hangs: it writes its own pid and a grandchild's to the file it is given, then both sleep.
HANGING_JOB = textwrap.dedent(
    """
    import os, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[1], "w") as f:
        f.write(f"{os.getpid()} {grandchild.pid}")
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids: list[int], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def _pids(path: Path) -> list[int]:
    assert path.exists(), "the job never started"
    return [int(p) for p in path.read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_hung_job_past_the_deadline_fails_naming_the_stage_and_is_stopped(tmp_path):
    message = r"^stage train of iteration 3 ran past compute.stage_timeout_s=4 and was stopped"
    with pytest.raises(StageTimeout, match=message), stage_deadline(4, "train", 3):
        _stream([sys.executable, "-c", HANGING_JOB, str(tmp_path / "pids")], {}, None)
    assert _gone(_pids(tmp_path / "pids")), "the hung job or its grandchild outlived the timeout"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_timed_out_stage_is_not_retried(tmp_path):
    from prefect import flow, task

    from tasks.stages import STAGE

    calls = []

    @task(**{**STAGE, "retry_delay_seconds": 0})
    def hangs():
        calls.append(1)
        with stage_deadline(4, "generate", 1):
            _stream([sys.executable, "-c", HANGING_JOB, str(tmp_path / "pids")], {}, None)

    @flow
    def once():
        with pytest.raises(StageTimeout, match="stage generate of iteration 1 ran past"):
            hangs()

    once()
    assert calls == [1]
    assert _gone(_pids(tmp_path / "pids"))


def test_the_deadline_reaches_a_stage_outside_the_main_thread():
    caught = []

    def stage() -> None:
        try:
            with stage_deadline(0.5, "rank", 2):
                while True:  # Python code that never ends on its own
                    time.sleep(0.01)
        except StageTimeout as err:
            caught.append(str(err))

    worker = threading.Thread(target=stage)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and caught and caught[0].startswith("stage rank of iteration 2 ran past")


def test_a_stage_within_its_deadline_leaves_no_alarm_behind():
    with stage_deadline(60, "build-parquet", 1):
        pass
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with stage_deadline(0, "train", 1), stage_deadline(None, "train", 1):  # no limit
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_the_recipe_field_defaults_to_six_hours_and_zero_or_null_disables_it():
    assert load_recipe(None).compute.stage_timeout_s == 21600
    assert load_recipe(None, ["compute.stage_timeout_s=0"]).compute.stage_timeout_s == 0
    assert load_recipe(None, ["compute.stage_timeout_s=null"]).compute.stage_timeout_s is None
    with pytest.raises(ValueError, match="stage_timeout_s"):
        load_recipe(None, ["compute.stage_timeout_s=-1"])


def test_a_stage_task_past_its_deadline_fails_once_in_one_line(monkeypatch):
    """The stage tasks' wrapper (tasks.stages.stage_task) runs each stage within the recipe's deadline; a stage
    that hangs (here build-parquet's library call, made to sleep) fails with the deadline's message, unretried."""
    from prefect import flow

    import tasks.stages as stages

    calls = []
    monkeypatch.setattr(stages, "build_dataset", lambda *a: calls.append(1) or time.sleep(30))
    recipe = load_recipe(None, ["compute.stage_timeout_s=0.5"])

    @flow
    def one_stage():
        return stages.build_dataset_task(recipe, "unused", 3, "unused-out")

    state = one_stage(return_state=True)
    assert state.is_failed() and calls == [1], "not retried"
    assert "build-parquet failed: stage build-parquet of iteration 3 ran past compute.stage_timeout_s=0.5" in (
        state.message
    )
