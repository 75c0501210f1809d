"""Stale JIT build locks (sppo.build_locks): torch's own FileBaton, taken by real processes, one of them killed
midway as a rank killed during DeepSpeed's first-use op build is."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sppo.build_locks import clear_stale_build_locks

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")

# A builder as torch.utils.cpp_extension runs one: take the op's baton, then build (here: sleep) with it held.
BUILDER = (
    "import sys, time\n"
    "from torch.utils.file_baton import FileBaton\n"
    "assert FileBaton(sys.argv[1]).try_acquire()\n"
    "print('building', flush=True)\n"
    "time.sleep(600)\n"
)


def _start_builder(lock: Path) -> subprocess.Popen:
    lock.parent.mkdir(parents=True)
    builder = subprocess.Popen([sys.executable, "-c", BUILDER, str(lock)], stdout=subprocess.PIPE, text=True)
    assert builder.stdout.readline() == "building\n", "the builder did not take its lock"
    return builder


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_dead_builder_s_lock_is_removed_and_logged_a_live_one_kept(tmp_path, caplog):
    root = tmp_path / "torch_extensions" / "py311_cpu"  # torch's layout without TORCH_EXTENSIONS_DIR
    stale, held = root / "cpu_adam" / "lock", root / "fused_adam" / "lock"
    killed, live = _start_builder(stale), _start_builder(held)
    try:
        killed.kill()  # killed midway: nothing removes its lock
        killed.wait(timeout=30)
        assert stale.exists(), "torch's baton outlives a builder killed midway"
        _age(stale, 120)
        _age(held, 120)  # as old, but its builder is still at work

        with caplog.at_level(logging.WARNING, logger="sppo.build_locks"):
            removed = clear_stale_build_locks(tmp_path / "torch_extensions")

        assert removed == [stale] and not stale.exists()
        assert held.exists(), "a lock its builder still holds open is kept"
        lines = [r.getMessage() for r in caplog.records if r.name == "sppo.build_locks"]
        assert len(lines) == 1 and str(stale) in lines[0]
    finally:
        for builder in (killed, live):
            builder.kill()
            builder.wait(timeout=30)


def test_a_lock_just_made_is_kept_even_without_a_holder(tmp_path):
    """A builder closes its lock an instant before removing it: a fresh lock is never taken for dead."""
    lock = tmp_path / "cpu_adam" / "lock"  # the layout under TORCH_EXTENSIONS_DIR
    lock.parent.mkdir()
    lock.touch()
    assert clear_stale_build_locks(tmp_path, min_age_s=60) == [] and lock.exists()
    _age(lock, 120)
    assert clear_stale_build_locks(tmp_path, min_age_s=60) == [lock] and not lock.exists()
