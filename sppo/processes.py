"""Child processes that never outlive the process that started them.

`start_group(cmd)` runs cmd under a small guard (this file, run as a script) that leads a process group of its
own and carries PR_SET_PDEATHSIG=SIGTERM: when the starting process dies, even by kill -9, the kernel sends the
guard SIGTERM and the guard takes its whole group down (cmd and everything cmd started: torchrun's ranks, their
compilers), SIGKILL after a grace period. PDEATHSIG alone would reach only the direct child, and a launcher
killed that way can leave its ranks behind. Being a group of its own also keeps the job out of the terminal's
Ctrl-C: the starting process decides, and calls `stop_group` (SIGTERM to the group, then SIGKILL).

PDEATHSIG is Linux's; elsewhere the guard still leads the group, so `stop_group` works, but a kill -9 of the
starting process leaves the job running. Standard library only: the guard runs without the project importable."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

GRACE_S = 5.0  # how long a stopped group has to exit on SIGTERM before SIGKILL
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to this child when the thread that started it ends (Linux)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect: nobody would signal us
        os.kill(os.getpid(), signal.SIGTERM)


def start_group(cmd: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """Start `cmd` (Popen's keyword arguments as usual) under the guard; the returned process is the guard,
    whose returncode is cmd's (-N when cmd died of signal N, as for cmd itself) and whose pid is the group's id."""
    guard = [sys.executable, "-I", str(Path(__file__).resolve()), *cmd]  # -I: no project paths, no PYTHON* env
    return subprocess.Popen(guard, start_new_session=True, preexec_fn=die_with_parent, **popen_kwargs)


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the group `proc` leads, give it grace_s to exit, then SIGKILL it. A no-op once proc has exited
    and been reaped (its group is gone or is no longer ours to name)."""
    if proc.poll() is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s + 1)  # the guard itself SIGKILLs the group after grace_s
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class _Stop(Exception):
    """Raised by the guard's signal handler, so a blocking wait for cmd returns to the stopping code."""


def _guard(cmd: list[str]) -> int:
    """Run cmd in this (the guard's own) process group; on SIGTERM, SIGHUP or SIGINT stop the whole group."""
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def stop(signum, frame) -> None:
        raise _Stop

    for signum in signals:  # before cmd starts: a signal from then on reaches its group
        signal.signal(signum, stop)
    child = None
    try:
        child = subprocess.Popen(cmd)
        code = child.wait()
    except _Stop:
        for signum in signals:  # the group signals below reach this guard too
            signal.signal(signum, signal.SIG_IGN)
        _signal_group(0, signal.SIGTERM)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=GRACE_S)
        _signal_group(0, signal.SIGKILL)  # whatever is left (a rank that ignored SIGTERM), this guard included
        return 128 + signal.SIGTERM
    # cmd is done; anything it left running in the group (a daemonized helper) is stopped with it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _signal_group(0, signal.SIGTERM)
    if code < 0:  # died of a signal: end the same way, so our parent sees what cmd's would have
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP take no handler
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(_guard(sys.argv[1:]))
