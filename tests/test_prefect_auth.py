"""`make server` requires Prefect's API auth string (generated once into a 0600 file), and `make deploy`
sends it: a real server on 127.0.0.1, started by the Makefile."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import stat
import subprocess
import time

import httpx
import pytest

from .conftest import REPO
from .ui.stack import free_port

# .venv/.installed is taken as up to date: the test must never reinstall the shared environment.
MAKE = ["make", "--no-print-directory", "-o", ".venv/.installed"]


def _basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    settings = [
        f"PREFECT_PORT={port}",
        f"PREFECT_HOME={root / 'home'}",
        f"PREFECT_AUTH_FILE={root / 'auth' / 'api-auth'}",
    ]
    env = {k: v for k, v in os.environ.items() if "AUTH_STRING" not in k and k != "PREFECT_API_URL"}
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [*MAKE, "server", *settings], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180  # a guard against a hang, not a measurement
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=5).status_code == 200:  # probes need no auth
                    break
            assert time.monotonic() < deadline, "prefect server did not come up"
            time.sleep(0.5)
        yield {"api": api, "root": root, "settings": settings, "env": env}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_the_auth_string_is_a_private_file(server):
    secret_file = server["root"] / "auth" / "api-auth"
    assert len(secret_file.read_text()) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700


def test_the_api_refuses_requests_without_the_auth_string(server):
    secret = (server["root"] / "auth" / "api-auth").read_text()
    url = f"{server['api']}/flows/filter"
    assert httpx.post(url, json={}, timeout=30).status_code == 401
    assert httpx.post(url, json={}, headers=_basic("not-the-secret"), timeout=30).status_code == 401
    assert httpx.post(url, json={}, headers=_basic(secret), timeout=30).status_code == 200


def test_make_deploy_sends_the_auth_string(server):
    secret = (server["root"] / "auth" / "api-auth").read_text()
    done = subprocess.run(
        [*MAKE, "deploy", *server["settings"]], cwd=REPO, env=server["env"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert secret not in done.stdout + done.stderr, "make printed the secret"
    response = httpx.get(
        f"{server['api']}/deployments/name/sppo-iteration/cpu-smollm2", headers=_basic(secret), timeout=30
    )
    assert response.status_code == 200
