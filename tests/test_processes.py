"""A launched job never outlives what launched it (sppo.processes): real processes, real signals.

Each test starts a job whose command spawns a grandchild, as torchrun spawns its ranks, and checks through
/proc that both are gone after the launcher is killed or stops the group. Deadlines are generous and only
bound the polling; no assertion is about how fast it went."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sppo.processes import start_group, stop_group

from .conftest import REPO

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc and PDEATHSIG")

# The job: writes its pid and its grandchild's to `pids`, then waits on the grandchild, which sleeps.
JOB = textwrap.dedent(
    """
    import subprocess, sys, time
    pids = sys.argv[1]
    ignore = sys.argv[2] == "ignore-sigterm"
    code = "import signal, time\\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if ignore else "")
    grandchild = subprocess.Popen([sys.executable, "-c", code + "time.sleep(600)"])
    with open(pids + ".part", "w") as f:
        f.write(f"{__import__('os').getpid()} {grandchild.pid}")
    __import__('os').replace(pids + ".part", pids)
    grandchild.wait()
    """
)

# The launcher: starts the job through sppo.processes.start_group, then sleeps until it is killed.
LAUNCHER = textwrap.dedent(
    """
    import sys, time
    from sppo.processes import start_group
    start_group([sys.executable, "-c", sys.argv[1], sys.argv[2], "keep"])
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_for_pids(path: Path, proc: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, f"the job's launcher exited early (rc {proc.returncode})"
        assert time.monotonic() < deadline, "the job never started its grandchild"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def _wait_gone(pids: list[int], seconds: float = 60) -> list[int]:
    """The pids still alive after waiting up to `seconds` for all of them to end."""
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_kill_9_of_the_launcher_takes_the_job_and_its_grandchild_down(tmp_path):
    pids_file = tmp_path / "pids"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, JOB, str(pids_file)], cwd=REPO)
    try:
        job, grandchild = _wait_for_pids(pids_file, launcher)
        assert _alive(job) and _alive(grandchild)
        launcher.kill()  # kill -9: no handler, no finally, nothing of the launcher's runs
        launcher.wait(timeout=30)
        assert _wait_gone([job, grandchild]) == [], "the job or its grandchild outlived its launcher (orphaned)"
    finally:
        launcher.kill()
        for pid in _read_pids(pids_file):
            _kill(pid)


def test_stop_group_ends_a_job_whose_grandchild_ignores_sigterm(tmp_path):
    pids_file = tmp_path / "pids"
    job = start_group([sys.executable, "-c", JOB, str(pids_file), "ignore-sigterm"])
    try:
        pids = _wait_for_pids(pids_file, job)
        stop_group(job)
        assert job.returncode is not None
        assert _wait_gone(pids) == [], "a process of the stopped group is still running"
    finally:
        for pid in _read_pids(pids_file):
            _kill(pid)


def test_the_guard_passes_the_job_s_exit_code_and_output_through():
    job = start_group([sys.executable, "-c", "print('hello'); raise SystemExit(7)"], stdout=subprocess.PIPE, text=True)
    out, _ = job.communicate(timeout=60)
    assert (job.returncode, out) == (7, "hello\n")
    killed = start_group([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert killed.wait(timeout=60) == -signal.SIGKILL, "a job killed by a signal reads as killed by it"


def test_the_job_is_out_of_the_terminal_s_process_group():
    """Ctrl-C goes to the terminal's foreground group; the job is not in it, so the launcher decides."""
    job = start_group([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert os.getpgid(job.pid) == job.pid != os.getpgid(0)
    finally:
        stop_group(job)


def _read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
