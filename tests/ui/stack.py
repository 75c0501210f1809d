"""A real Prefect server and process worker on 127.0.0.1 for the UI tests, and the REST calls they make.

The server gets a fresh PREFECT_HOME (its own database) under the test's folder; the worker runs flow
runs from this checkout (SPPO_WORKDIR), as `make worker` does."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# What Prefect's own client retries (prefect.client.base): the server answers 503 to an error a client may
# retry, such as SQLite's "database is locked" while the worker and the server's services write at once.
RETRY_STATUS = {429, 502, 503}
RETRIES = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The server's URLs, the environment its clients and worker use, and the REST calls the tests make."""

    def __init__(self, home: Path, port: int):
        self.ui = f"http://127.0.0.1:{port}"
        self.api = f"{self.ui}/api"
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api,
            "PREFECT_UI_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "sppo",
            # A retried 503's cause lands in server.log.
            "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
            "SPPO_WORKDIR": str(REPO),
            # This checkout's code, also where the virtual environment was installed from another one.
            "PYTHONPATH": str(REPO),
        }
        self.http = httpx.Client(base_url=self.api, timeout=30)

    def cli(
        self, *args: str, env: dict[str, str] | None = None, unset: list[str] | None = None
    ) -> subprocess.CompletedProcess:
        """`prefect ARGS` from the repository root against this server, `unset` variables removed and `env`
        added; output captured."""
        environment = {k: v for k, v in self.env.items() if k not in (unset or [])}
        return subprocess.run(
            [PREFECT, *args], cwd=REPO, env={**environment, **(env or {})}, capture_output=True, text=True, timeout=300
        )

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        return subprocess.Popen(
            [PREFECT, *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def request(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        """One REST call, retried with backoff on the statuses Prefect's client retries; other errors raise."""
        for attempt in range(RETRIES + 1):
            response = self.http.request(method, path, json=body)
            if response.status_code not in RETRY_STATUS or attempt == RETRIES:
                break
            time.sleep(2**attempt)
        response.raise_for_status()
        return response

    def get(self, path: str) -> Any:
        return self.request("GET", path).json()

    def post(self, path: str, body: dict) -> Any:
        response = self.request("POST", path, body)
        return response.json() if response.content else None

    def run_deployment(self, name: str, parameters: dict[str, Any]) -> str:
        deployment = self.get(f"/deployments/name/{name}")
        return self.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})["id"]

    def flow_run(self, flow_run_id: str) -> dict:
        return self.get(f"/flow_runs/{flow_run_id}")

    def wait(self, flow_run_id: str, timeout_s: float = 600, states: set[str] = FINAL) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.flow_run(flow_run_id)
            if run["state_type"] in states:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {run['name']} still {run['state_type']} after {timeout_s:.0f} s")
            time.sleep(2)

    def task_runs(self, flow_run_id: str) -> list[dict]:
        return self.post(
            "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        )

    def logs_of(self, flow_run_id: str) -> list[str]:
        """Every log message of a flow run (its tasks' included), oldest first."""
        messages: list[str] = []
        while True:
            page = self.post(
                "/logs/filter",
                {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": len(messages)},
            )
            messages += [row["message"] for row in page]
            if len(page) < 200:
                return messages

    def errors_of(self, flow_run_id: str) -> list[str]:
        """The ERROR (and worse) log entries of a flow run, oldest first."""
        body = {
            "logs": {"flow_run_id": {"any_": [flow_run_id]}, "level": {"ge_": 40}},
            "sort": "TIMESTAMP_ASC",
            "limit": 200,
        }
        return [row["message"] for row in self.post("/logs/filter", body)]

    def artifacts(self, key: str | None = None, flow_run_id: str | None = None) -> list[dict]:
        body: dict[str, Any] = {"artifacts": {}, "sort": "CREATED_DESC"}
        if key:
            body["artifacts"]["key"] = {"any_": [key]}
        if flow_run_id:
            body["artifacts"]["flow_run_id"] = {"any_": [flow_run_id]}
        return self.post("/artifacts/filter", body)[::-1]  # oldest first


def _wait_healthy(stack: Stack, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited ({server.returncode}); see {stack.logs / 'server.log'}")
        with contextlib.suppress(httpx.HTTPError):
            if stack.http.get("/health").status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"prefect server not healthy after {timeout_s:.0f} s; see {stack.logs / 'server.log'}")


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=10)


@contextlib.contextmanager
def prefect_server(home: Path, pool: str = "sppo-cpu") -> Iterator[Stack]:
    """A server on a free port with the work pool; stopped after."""
    stack = Stack(home, free_port())
    server = stack.start("server", "server", "start", "--host", "127.0.0.1", "--port", stack.ui.rsplit(":", 1)[1])
    try:
        _wait_healthy(stack, server)
        made = stack.cli("work-pool", "create", pool, "--type", "process")
        assert made.returncode == 0, made.stdout + made.stderr
        yield stack
    finally:
        _stop(server)


@contextlib.contextmanager
def prefect_stack(home: Path, pool: str = "sppo-cpu") -> Iterator[Stack]:
    """A server on a free port, the work pool, and a process worker serving it; all stopped after."""
    with prefect_server(home, pool) as stack:
        worker = stack.start("worker", "worker", "start", "--pool", pool, "--type", "process", "--limit", "1")
        try:
            yield stack
        finally:
            _stop(worker)
