"""Crash and resume: kill -9 an iteration inside each stage, re-run it, and get exactly what an uninterrupted
run gets, without redoing any stage that had finished.

Each run is the real command line (`python -m flows.sppo_iteration`) in its own process group, so SIGKILL
takes the flow, Prefect's temporary API and any helper process down at once, like a lost machine.

Killing inside a stage: a stage computes into `<iter-dir>/.<stage>.tmp` and renames it into place, so that
folder exists exactly while the stage is running. rank and build-parquet take only 10-30 ms on the smoke
recipe, too short for polling, so the test waits on Linux inotify events of the iteration folder: the kill
follows the creation of `.<stage>.tmp` within a fraction of a millisecond, i.e. at the start of the
stage's work. After the kill the test checks that it did land inside (temporary folder there, stage not
committed) before going on, so a late kill fails loudly instead of silently testing something else."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sppo.artifacts import MANIFEST, STAGES

from .conftest import REPO

pytestmark = pytest.mark.faults

RUN = "smoke"
BASE = "iter-000/model"
FOLDERS = (BASE, *(f"iter-001/{stage}" for stage in STAGES))  # in the order the flow commits them
TABLES = {"generate": "generations.parquet", "rank": "preferences.parquet", "dataset": "train.parquet"}
RUN_TIMEOUT = 300


def _command(store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flows.sppo_iteration",
        "--run",
        RUN,
        "--iteration",
        "1",
        "--config",
        "configs/smoke.yaml",
        "--set",
        f"store={store}",
    ]


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)  # always Prefect's temporary API, inside the process group we kill
    return env


def _run_to_completion(store: Path, home: Path, log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(
            _command(store), cwd=REPO, env=_env(home), stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT
        )
    assert done.returncode == 0, f"iteration 1 failed (rc {done.returncode}):\n{_tail(log)}"


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifests(run_dir: Path) -> dict[str, bytes]:
    """Manifest bytes of every committed stage folder."""
    return {f: (run_dir / f / MANIFEST).read_bytes() for f in FOLDERS if (run_dir / f / MANIFEST).is_file()}


def _contents(run_dir: Path) -> dict[str, dict]:
    """What a finished iteration produced, free of times and store paths: per stage folder its fingerprint,
    rows and the sha256 of every output file, the files read back from disk and checked against the manifest."""
    found = {}
    for folder in FOLDERS:
        manifest = json.loads((run_dir / folder / MANIFEST).read_bytes())
        files = {
            str(p.relative_to(run_dir / folder)): _sha256(p)
            for p in sorted((run_dir / folder).rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        assert files == manifest["outputs"], f"{folder}: files on disk differ from its manifest"
        found[folder] = {k: manifest[k] for k in ("stage", "fingerprint", "rows", "outputs")}
    return found


def _answers(run_dir: Path) -> list:
    """The evaluation answer cache, by content (its file names carry manifest digests, which hold times)."""
    return sorted(
        (json.loads(p.read_bytes()) for p in (run_dir / "eval-answers").glob("*.json") if not p.name.startswith(".")),
        key=json.dumps,
    )


def _locks(run_dir: Path) -> list[Path]:
    """The iteration's writer lock, wherever this version of the code keeps it."""
    return [p for p in (run_dir / "iter-001.lock", run_dir / "iter-001" / ".lock") if p.exists()]


class _FolderEvents:
    """Wakes as soon as an entry is created in or renamed into or out of a folder (Linux inotify, through
    libc); elsewhere it only sleeps, which is enough for the stages that last seconds."""

    _MASK = 0x100 | 0x80 | 0x40  # IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM

    def __init__(self) -> None:
        self.fd = -1
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self._libc.inotify_init1.argtypes = [ctypes.c_int]
            self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            self.fd = -1

    def watch(self, folder: Path) -> None:
        if self.fd >= 0 and self._libc.inotify_add_watch(self.fd, os.fsencode(folder), self._MASK) < 0:
            self.close()

    def wait(self, seconds: float) -> None:
        if self.fd < 0:
            time.sleep(seconds)
            return
        if select.select([self.fd], [], [], seconds)[0]:
            try:
                os.read(self.fd, 1 << 16)  # drain; the caller looks at the folder itself
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10  # the rest of the group (Prefect's API server) dies with it
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _kill_inside(proc: subprocess.Popen, iter_dir: Path, stage: str, log: Path) -> None:
    """SIGKILL the run's process group the moment `stage` starts computing (its temporary folder appears)."""
    tmp, final = iter_dir / f".{stage}.tmp", iter_dir / stage
    deadline = time.monotonic() + RUN_TIMEOUT
    events = _FolderEvents()
    watching = False
    try:
        while not tmp.exists():
            if not watching and iter_dir.is_dir():
                events.watch(iter_dir)
                watching = True
                continue  # look again: the folder may have appeared before the watch
            assert not (final / MANIFEST).exists(), f"{stage} finished before the test could kill it"
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {stage} started:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"{stage} never started:\n{_tail(log)}"
            events.wait(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        events.close()
        _kill_group(proc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """One uninterrupted iteration 1 of the smoke recipe, in its own store."""
    home = tmp_path_factory.mktemp("reference")
    run_dir = home / "store" / RUN
    _run_to_completion(home / "store", home, home / "run.log")
    return {"run_dir": run_dir, "contents": _contents(run_dir), "answers": _answers(run_dir)}


@pytest.mark.parametrize("stage", STAGES)
def test_kill_inside_a_stage_then_rerun_completes_it_and_matches_an_uninterrupted_run(reference, stage, tmp_path):
    store, log = tmp_path / "store", tmp_path / "run.log"
    run_dir, iter_dir = store / RUN, store / RUN / "iter-001"
    killed_at = FOLDERS.index(f"iter-001/{stage}")

    with log.open("wb") as out:
        proc = subprocess.Popen(
            _command(store),
            cwd=REPO,
            env=_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes Prefect's API server down too
        )
    _kill_inside(proc, iter_dir, stage, log)

    # The kill landed inside the stage: it had started (its temporary folder is there) and not committed.
    assert (iter_dir / f".{stage}.tmp").is_dir(), f"killed outside {stage}"
    assert not (iter_dir / stage).exists(), f"{stage} was committed before the kill landed"
    print(f"killed inside {stage}; its temporary folder held {sorted(os.listdir(iter_dir / f'.{stage}.tmp'))}")
    finished = _manifests(run_dir)
    assert list(finished) == list(FOLDERS[:killed_at]), "exactly the stages before the killed one had finished"
    stale = _locks(run_dir)
    assert stale and json.loads(stale[0].read_bytes())["pid"] == proc.pid, "the dead writer's lock is left behind"

    _run_to_completion(store, tmp_path, log)  # the re-run takes over the dead writer's lock

    after = _manifests(run_dir)
    assert {f: after[f] for f in finished} == finished, "a stage that had finished was redone"
    assert list(after) == list(FOLDERS), "every stage is committed after the re-run"
    leftovers = [
        p.name for d in (run_dir / "iter-000", iter_dir) for p in d.iterdir() if p.name not in ("model", *STAGES)
    ]
    assert leftovers == [], "no temporary or superseded stage folders are left"
    assert _locks(run_dir) == [], "the re-run released the lock"

    # Same artifacts as the uninterrupted run: the tables by content, the model and metrics byte for byte.
    ref_dir = reference["run_dir"]
    for name, table in TABLES.items():
        got, want = pq.read_table(iter_dir / name / table), pq.read_table(ref_dir / "iter-001" / name / table)
        assert got.equals(want), f"{name}/{table} differs from the uninterrupted run"
    for folder in (BASE, "iter-001/model"):
        assert _sha256(run_dir / folder / "model.safetensors") == _sha256(ref_dir / folder / "model.safetensors")
    metrics = "iter-001/evaluate/metrics.json"
    assert json.loads((run_dir / metrics).read_bytes()) == json.loads((ref_dir / metrics).read_bytes())
    assert _contents(run_dir) == reference["contents"], "some output file differs from the uninterrupted run"
    assert _answers(run_dir) == reference["answers"], "the evaluation answer cache differs"


def _children(pid: int) -> list[int]:
    """Every live descendant of pid (Linux /proc)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            found += [int(c) for c in children]
            frontier += [int(c) for c in children]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A smoke iteration whose generate stage runs for a while (long answers), started as the CLI is."""
    log = tmp_path / "run.log"
    command = [*_command(tmp_path / "store"), "--set", "generate.max_new_tokens=1500"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (tmp_path / "store" / RUN / "iter-001" / ".generate.tmp").exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"generate never started:\n{_tail(log)}"
        time.sleep(0.2)
    return proc, log


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_kill_9_of_the_command_takes_its_temporary_api_with_it(tmp_path):
    proc, log = _start_long_run(tmp_path)
    children = _children(proc.pid)
    assert children, f"the temporary API server should be a child of the command:\n{_tail(log)}"
    proc.kill()  # only the command, not its process group: its children are on their own now
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c) for c in children), "an orphaned child (the temporary API server) outlived kill -9"


def test_sigterm_stops_the_command_and_releases_the_lock(tmp_path):
    proc, log = _start_long_run(tmp_path)
    children = _children(proc.pid)
    proc.terminate()
    assert proc.wait(timeout=60) == 143, _tail(log)
    assert not (tmp_path / "store" / RUN / "iter-001.lock").exists(), "the lock is released on SIGTERM"
    assert not (tmp_path / "store" / RUN / "iter-001" / "generate").exists(), "the interrupted stage is not committed"
    assert not any(_alive(c) for c in children), "no child outlives the command"


def _flow_run_states(home: Path) -> dict[str, str]:
    """name -> state type of every flow run in the Prefect database under `home` (its PREFECT_HOME)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(home / "prefect" / "prefect.db")) as db:
        return dict(db.execute("SELECT name, state_type FROM flow_run").fetchall())


def test_ctrl_c_during_generate_exits_130_marks_the_run_ended_and_leaves_no_tmp(tmp_path):
    """Ctrl-C in the terminal: SIGINT to the command's whole foreground process group, once. Before, it killed
    Prefect's temporary API as well, and the run hung on it, then stayed RUNNING with .generate.tmp behind."""
    store, log = tmp_path / "store", tmp_path / "run.log"
    tmp = store / RUN / "iter-001" / ".generate.tmp"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_command(store), "--set", "generate.max_new_tokens=1500"],  # a generate stage that lasts
            cwd=REPO,
            env=_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, as a terminal's foreground job is
        )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not tmp.exists():
            assert proc.poll() is None and time.monotonic() < deadline, f"generate never started:\n{_tail(log)}"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=RUN_TIMEOUT) == 130, _tail(log)
    finally:
        _kill_group(proc)

    left = [str(p.relative_to(store)) for p in store.rglob("*.tmp")]
    assert left == [], "a temporary folder or file is left for the rerun to trip on"
    assert not (store / RUN / "iter-001.lock").exists(), "the lock is released on Ctrl-C"
    assert not (store / RUN / "iter-001" / "generate").exists(), "the interrupted stage is not committed"
    states = _flow_run_states(tmp_path)
    assert states.get(f"{RUN}-iter-001") in ("CRASHED", "CANCELLED"), f"flow runs: {states}\n{_tail(log)}"
    assert "ConnectError" not in log.read_text(errors="replace"), "the API went down with the Ctrl-C"
