"""The embedded default's local Ray (distributed.ray_pool.connect(None)) authenticates with the project's
token and listens on 127.0.0.1 only: a real Ray, started in a child process, probed by other processes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from .conftest import REPO

# Starts the local Ray as a flow does, runs one task (so a worker process exists), says where its GCS is
# and which token it uses, then keeps Ray up until stdin closes.
SERVE = """
import json, sys
import ray
from distributed.ray_pool import connect
connect(None, num_cpus=1)
assert ray.get(ray.remote(lambda: 1).remote()) == 1
import os
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address,
                  "token_path": os.environ.get("RAY_AUTH_TOKEN_PATH")}), flush=True)
sys.stdin.read()
"""

# Joins the running Ray as a second driver and runs one task on it.
JOIN = """
import sys
import ray
ray.init(address=sys.argv[1])
print("joined", ray.get(ray.remote(lambda: 41 + 1).remote()), flush=True)
"""

# The same through the pipeline's connect(): no RAY_AUTH_* set, so the project's token file.
CONNECT = """
import sys
import ray
from distributed.ray_pool import connect
connect(sys.argv[1])
print("joined", ray.get(ray.remote(lambda: 41 + 1).remote()), flush=True)
"""

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    temp_dir = tempfile.mkdtemp(prefix="sppo-ray-", dir="/tmp")  # short: Ray puts sockets in it
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        cwd=REPO,
        env=_env(home, RAY_TMPDIR=temp_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, f"the local Ray did not start (exit code {proc.poll()})"
        info = json.loads(line)
        yield {**info, "pid": proc.pid, "home": home}
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _join(address: str, home: Path, script: str = JOIN, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, address],
        cwd=REPO,
        # The address stays 127.0.0.1 (Ray would rewrite it to the machine's, where nothing listens).
        env=_env(home, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_local_ray_uses_the_projects_token_file(local_ray):
    from distributed.ray_pool import TOKEN_FILE

    assert local_ray["token_path"] == str(TOKEN_FILE)
    assert stat.S_IMODE(TOKEN_FILE.stat().st_mode) == 0o600
    assert stat.S_IMODE(TOKEN_FILE.parent.stat().st_mode) == 0o700
    assert not (local_ray["home"] / ".ray").exists(), "Ray wrote a token into ~/.ray"


def test_a_client_without_the_token_is_refused(local_ray):
    from distributed.ray_pool import TOKEN_FILE

    home = local_ray["home"]
    no_token = _join(local_ray["gcs"], home)  # Ray's own default: no token anywhere, so none sent
    assert no_token.returncode != 0 and "joined" not in no_token.stdout
    assert "auth" in (no_token.stderr + no_token.stdout).lower(), no_token.stderr[-2000:]

    wrong = _join(local_ray["gcs"], home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
    assert wrong.returncode != 0 and "joined" not in wrong.stdout
    assert "auth" in (wrong.stderr + wrong.stdout).lower(), wrong.stderr[-2000:]

    right = _join(local_ray["gcs"], home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(TOKEN_FILE))
    assert right.returncode == 0, right.stderr[-3000:]
    assert "joined 42" in right.stdout
    assert TOKEN_FILE.read_text() not in right.stdout + right.stderr, "the token was logged"

    pipeline = _join(local_ray["gcs"], home, CONNECT)
    assert pipeline.returncode == 0, pipeline.stderr[-3000:]
    assert "joined 42" in pipeline.stdout
    assert TOKEN_FILE.read_text() not in pipeline.stdout + pipeline.stderr, "the token was logged"


def test_every_ray_process_listens_on_loopback_only(local_ray):
    driver = psutil.Process(local_ray["pid"])
    tree = [driver, *driver.children(recursive=True)]
    listeners = []
    for proc in tree:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listeners.append((name, conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    names = {name for name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names, listeners  # the probe sees Ray's servers
    assert any(name.startswith("ray::") for name in names), listeners  # and its workers or agents
    ss = shutil.which("ss")
    if ss:  # what a person checking the host sees; kept for the record
        out = subprocess.run([ss, "-ltnp"], capture_output=True, text=True).stdout
        Path(REPO / ".cache").mkdir(exist_ok=True)
        (REPO / ".cache" / "ss-ltnp-local-ray.txt").write_text(out)
    exposed = [entry for entry in listeners if entry[1] not in LOOPBACK]
    assert not exposed, f"Ray processes listening beyond 127.0.0.1: {exposed}"


def test_the_token_is_made_once_and_kept_private(tmp_path, monkeypatch):
    from distributed import ray_pool

    monkeypatch.setattr(ray_pool, "TOKEN_FILE", tmp_path / "ray" / "auth_token")
    first = ray_pool.token_file()
    token = first.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert ray_pool.token_file().read_text() == token  # kept, not regenerated

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert ray_pool.token_env() == {"RAY_AUTH_TOKEN_PATH": str(first)}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/etc/sppo/ray-token")  # the user's own token wins
    assert ray_pool.token_env() == {}
