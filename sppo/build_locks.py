"""Stale build locks of torch's JIT extensions (DeepSpeed's ops), cleared before a training job starts.

The first DeepSpeed job on a checkout compiles helper ops into $TORCH_EXTENSIONS_DIR/<op>/ (or
~/.cache/torch_extensions/<python_accelerator>/<op>/). torch serialises that build with a `lock` file
(torch.utils.file_baton): the builder creates it, keeps it open while it builds, and removes it when done;
everyone else polls until it is gone, with no deadline. A builder killed midway (a rank's kill -9, an OOM)
never removes it, and every later job then waits forever.

A lock is stale when no process on this machine has it open (the builder holds it open for the whole build)
and it is older than a few seconds (a builder closes the file an instant before removing it). Where some
processes' open files cannot be read (another user's, or no /proc) a builder could be hidden from us: then
only a lock older than an hour counts as stale."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "lock"  # torch.utils.cpp_extension: FileBaton(os.path.join(build_directory, "lock"))
MIN_AGE_S = 10.0
HIDDEN_MIN_AGE_S = 3600.0


def clear_stale_build_locks(
    root: str | Path, min_age_s: float = MIN_AGE_S, hidden_min_age_s: float = HIDDEN_MIN_AGE_S
) -> list[Path]:
    """Remove the stale build locks under `root` (a TORCH_EXTENSIONS_DIR, with or without torch's
    <python_accelerator> level), logging each; returns what was removed."""
    root = Path(root)
    locks = [*root.glob(f"*/{LOCK_NAME}"), *root.glob(f"*/*/{LOCK_NAME}")]
    if not locks:
        return []
    held, all_seen = open_files()
    removed = []
    for lock in locks:
        try:
            stat = lock.stat()
        except FileNotFoundError:  # its builder finished meanwhile
            continue
        age = time.time() - stat.st_mtime
        if (stat.st_dev, stat.st_ino) in held or age < (min_age_s if all_seen else hidden_min_age_s):
            continue
        try:
            lock.unlink()
        except FileNotFoundError:
            continue
        log.warning(
            "removed the stale build lock %s (%.0f s old, held by no running process): a build killed midway "
            "left it, and every later build of that op would have waited on it forever",
            lock,
            age,
        )
        removed.append(lock)
    return removed


def open_files() -> tuple[set[tuple[int, int]], bool]:
    """(device, inode) of every file some process on this machine has open, and whether every process's open
    files could be read (False without Linux /proc, or where another user's are hidden from us)."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return set(), False
    found, all_seen = set(), True
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except FileNotFoundError:  # exited meanwhile
            continue
        except PermissionError:
            all_seen = False
            continue
        for fd in fds:
            try:
                stat = os.stat(fd_dir / fd)
            except OSError:  # closed meanwhile, or a socket or pipe that stat cannot follow
                continue
            found.add((stat.st_dev, stat.st_ino))
    return found, all_seen
