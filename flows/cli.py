"""What the flows' command lines share: a mistake is one `error:` line before any flow starts, Prefect's
console shows no tracebacks (they go to a debug log file), the temporary local API dies with the command
(even on kill -9), and Ctrl-C or SIGTERM ends the command promptly.

Exit codes: 0 done, 2 a mistake in the command, recipe, data or store (or the iteration is locked),
1 anything else (the debug log has the traceback), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from sppo.iteration import IterationLocked
from sppo.processes import die_with_parent

LOG_DIR = Path(__file__).resolve().parent.parent / ".cache" / "logs"


class _WithoutTraceback(logging.Formatter):
    """Formats a record as `inner` does, minus its traceback: the console gets one line per failure."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


@contextlib.contextmanager
def concise_console(log_file: Path) -> Iterator[None]:
    """Console handlers lose tracebacks; a file handler keeps everything (full tracebacks) meanwhile."""
    root = logging.getLogger()
    for handler in root.handlers:
        console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if console and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    debug = logging.FileHandler(log_file, encoding="utf-8")
    debug.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(debug)
    try:
        yield
    finally:
        root.removeHandler(debug)
        debug.close()


@contextlib.contextmanager
def local_api() -> Iterator[None]:
    """Prefect's temporary local API for this command, unless PREFECT_API_URL names a server.

    Prefect would start the same server itself, but as a plain child that outlives a kill -9 of this
    command (~200 MB each) and shares its process group, so a Ctrl-C in the terminal kills it too and the
    interrupted run can no longer report its end (it hung on the dead API, then stayed RUNNING). Started here
    it carries PR_SET_PDEATHSIG, so it goes down with us, in a session of its own, so Ctrl-C reaches only us."""
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return

    class _DiesWithParent(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            popen = subprocess.Popen
            subprocess.Popen = lambda *a, **kw: popen(  # type: ignore[misc]
                *a, **kw, preexec_fn=die_with_parent, start_new_session=True
            )
            try:
                return super()._run_uvicorn_command()
            finally:
                subprocess.Popen = popen  # type: ignore[misc]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _DiesWithParent(port)
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                # Logs and events reach the API before it stops; drained later (at exit), they would be
                # retried against a dead server for a minute or more.
                APILogWorker.drain_all(timeout=5)
    finally:
        server.stop()


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run_command(name: str, validate: Callable[[], object], run: Callable[[], str]) -> int:
    """validate() before Prefect starts anything (its ValueErrors are mistakes: exit 2), then run() in a
    temporary local API (or the server PREFECT_API_URL names); prints run()'s message on success."""
    try:
        validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log_file = LOG_DIR / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with concise_console(log_file), local_api():
            print(run())
        return 0
    except (ValueError, IterationLocked) as err:  # a mistake or a concurrent writer: say so, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - anything else: one line here, the traceback in the debug log
        with log_file.open("a", encoding="utf-8") as log:
            traceback.print_exc(file=log)
        print(f"error: {type(err).__name__}: {err} (traceback: {log_file})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the flow run is marked Crashed and the stage's scratch removed on the way here
        print(f"interrupted (Ctrl-C); run the same command again to resume (log: {log_file})", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
