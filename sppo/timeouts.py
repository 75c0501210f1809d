"""A deadline on each stage (recipe field compute.stage_timeout_s): a hung stage fails with a message that says
which, instead of holding the iteration's lock and its machines forever.

The deadline raises StageTimeout in the thread that runs the stage. In the main thread (a flow run from the
command line or by a Prefect worker) it is a SIGALRM, so it also interrupts a blocking wait: a launched
training job's output, a sleep. Elsewhere it is raised the next time that thread runs Python code. Whatever the
stage started is stopped on the way out as on any error: a launched job's process group (sppo.processes),
Ray actors, a scratch folder."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time
from collections.abc import Iterator


class StageTimeout(RuntimeError):
    """A stage ran past compute.stage_timeout_s. Never retried: the retry would hang or run as long again."""


@contextlib.contextmanager
def stage_deadline(seconds: float | None, stage: str, iteration: int) -> Iterator[None]:
    """Raise StageTimeout in this thread if the block runs longer than `seconds` (None or 0: no deadline)."""
    if not seconds:
        yield
        return
    hours = f" ({seconds / 3600:.3g} h)" if seconds >= 3600 else ""
    message = (
        f"stage {stage} of iteration {iteration} ran past compute.stage_timeout_s={seconds:g}{hours} and was "
        "stopped; if it was still making progress (its log says), raise compute.stage_timeout_s (0 or null: no "
        "limit) and run the iteration again: the stages that finished are reused"
    )
    if threading.current_thread() is threading.main_thread():
        with _alarm(seconds, message):
            yield
    else:
        with _async_raise_after(seconds, message):
            yield


@contextlib.contextmanager
def _alarm(seconds: float, message: str) -> Iterator[None]:
    def expire(signum, frame) -> None:
        raise StageTimeout(message)

    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:  # an enclosing timer (Prefect's own task timeout) keeps running
            signal.setitimer(signal.ITIMER_REAL, max(previous_delay - (time.monotonic() - started), 1e-3))


@contextlib.contextmanager
def _async_raise_after(seconds: float, message: str) -> Iterator[None]:
    """Outside the main thread no signal reaches us: a timer thread raises StageTimeout in this one."""
    target, lock, done = threading.get_ident(), threading.Lock(), []

    class _Expired(StageTimeout):  # the interpreter instantiates it without arguments
        def __init__(self) -> None:
            super().__init__(message)

    def expire() -> None:
        with lock:
            if not done:  # never after the block ended: the exception would land in whatever runs next
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(_Expired))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done.append(True)
        timer.cancel()
