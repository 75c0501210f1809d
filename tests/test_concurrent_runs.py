"""Two processes run the same iteration at once: one writes, the other fails clearly; the store stays valid."""

import os
import subprocess
import sys
import time

import pytest

from sppo.artifacts import STAGES
from sppo.store import ArtifactStore, RunLayout

from .conftest import REPO

pytestmark = pytest.mark.faults


def test_second_concurrent_run_fails_clearly_and_the_first_completes(tmp_path):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(tmp_path / "prefect")}
    cmd = [
        sys.executable,
        "-m",
        "flows.sppo_iteration",
        "--run",
        "smoke",
        "--iteration",
        "1",
        "--config",
        "configs/smoke.yaml",
        "--set",
        f"store={tmp_path / 'store'}",
    ]
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = tmp_path / "store" / "smoke" / "iter-001.lock"
    deadline = time.monotonic() + 120
    while not lock.exists():
        assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert "another run of this iteration is writing" in second.stderr
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    layout = RunLayout(ArtifactStore(tmp_path / "store"), "smoke")
    for stage in STAGES:
        url = layout.stage_url(1, stage)
        layout.store.local_copy(url)  # every committed file matches its manifest
    assert not lock.exists()
