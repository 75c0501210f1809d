"""Which folders an iteration reads and writes, checked before any work starts, and the one-writer lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from sppo.store import ArtifactStore, RunLayout

log = logging.getLogger(__name__)


class IterationError(ValueError):
    pass


class IterationLocked(RuntimeError):
    pass


def starting_policy(layout: RunLayout, iteration: int) -> str:
    """pi_{t-1}, the model iteration t starts from and keeps frozen as its reference."""
    if iteration < 1:
        raise IterationError(f"iterations are numbered from 1, got {iteration}")
    url = layout.model_url(iteration - 1)
    if layout.store.manifest(url) is None:
        if iteration == 1:
            raise IterationError(f"{url} holds no base model; the iteration-1 flow prepares it first")
        raise IterationError(
            f"iteration {iteration} starts from iteration {iteration - 1}'s trained model, but {url} has none "
            f"(no manifest.json) for run {layout.run!r}: run `make run-iteration ITER={iteration - 1} "
            f"RUN={layout.run}` first"
        )
    return url


def next_iteration(layout: RunLayout, max_iterations: int) -> int | None:
    """The first iteration of the run whose evaluate stage has not committed, or None once all
    `max_iterations` have. What a scheduled run (`iteration: next`) works on: each run advances the
    campaign by one iteration, and a run interrupted mid-iteration is finished by the next one."""
    for iteration in range(1, max_iterations + 1):
        if layout.store.manifest(layout.stage_url(iteration, "evaluate")) is None:
            return iteration
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _read_holder(store: ArtifactStore, url: str) -> dict | None:
    """The lock's holder, None if the lock is gone, {} if it cannot be read as one (empty, not a JSON object)."""
    try:
        holder = json.loads(store.read_bytes(url))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def iteration_lock(
    store: ArtifactStore,
    url: str,
    wait_seconds: float = 0.0,
    poll_seconds: float = 2.0,
    unreadable_grace_seconds: float = 5.0,
) -> Iterator[None]:
    """Hold `url` (an object created with its content in one step, only if absent: a hard link locally, a
    conditional PUT on S3) while an iteration writes. A second writer waits up to wait_seconds, then fails
    naming the holder. A lock left by a process that died on this host (kill -9, OOM) is taken over, by one
    run only. Release removes the lock only while it still holds ours. A lock that cannot be read (an older
    writer crashed between creating and writing it) is waited on for unreadable_grace_seconds, then
    reported with what to do. Every retry sleeps; every wait has a deadline."""
    # The token tells our lock from any other, even one of this same process (a thread, a pid reused).
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "token": uuid.uuid4().hex,
    }
    started = time.monotonic()
    while True:
        try:
            store.create_exclusive(url, json.dumps(me).encode())
            if _read_holder(store, url) == me:
                break
            continue  # taken from us between creating and reading: never work without holding it
        except FileExistsError:
            pass
        holder = _read_holder(store, url)
        waited = time.monotonic() - started
        if holder is None:  # released between our two calls: try again shortly
            if waited > max(wait_seconds, unreadable_grace_seconds) + 60:
                raise IterationLocked(f"{url}: the store keeps saying it exists and that it does not; check the store")
            time.sleep(min(poll_seconds, 0.05))
            continue
        if not holder or not isinstance(holder.get("pid"), int):
            if waited >= max(wait_seconds, unreadable_grace_seconds):
                raise IterationLocked(
                    f"{url} exists but is not a lock this code wrote (empty or malformed: "
                    f"{_preview(store, url)}); if no run of this iteration is going on, delete it and run again"
                )
        elif holder.get("host") == me["host"] and not process_alive(holder["pid"]):
            _remove_dead_holder(store, url, holder)
            continue
        elif waited >= wait_seconds:
            raise IterationLocked(
                f"{url} is held by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: "
                "another run of this iteration is writing; wait for it to finish (or pass a lock wait), or "
                "delete that lock object if its process is gone"
            )
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        if _read_holder(store, url) == me:
            store.remove(url)
        else:  # someone deleted ours and another run took it: theirs stays
            log.warning("%s no longer holds this run's lock; left as it is", url)


def _remove_dead_holder(store: ArtifactStore, url: str, dead: dict) -> None:
    """Remove the lock `dead` left, if it is still the one there. Two runs that both saw it die would
    otherwise both remove-and-create, the second deleting the first's fresh lock. Only runs on the dead
    holder's host take it over, so a host-wide file lock (released by the kernel if its holder dies) makes
    the check and the removal one step; its file stays, as removing it would let two runs lock two files."""
    guard = Path(tempfile.gettempdir()) / f"sppo-takeover-{hashlib.sha256(url.encode()).hexdigest()[:16]}.lock"
    with guard.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if _read_holder(store, url) == dead:
                log.warning("taking over %s from dead process %s", url, dead["pid"])
                store.remove(url)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _preview(store: ArtifactStore, url: str) -> str:
    try:
        data = store.read_bytes(url)
    except FileNotFoundError:
        return "gone now"
    return repr(data[:40]) if data else "0 bytes"


# Iteration 1 samples from pi_0, the base, whatever loss trains on the result.
SHARED_BY_LOSSES = ("generate", "rank", "dataset")


def share_first_iteration(store: ArtifactStore, source_run: str, run: str, data: bool = True) -> list[str]:
    """Start `run` from `source_run`'s base model, iteration-1 data (unless not `data`: runs of another seed)
    and the base's held-out answers, so runs that differ only in the loss sample and judge iteration 1 once.
    Copies what `run` lacks and returns the stage URLs it copied. Each copy still has to match `run`'s recipe:
    the flow checks every stage's fingerprint and redoes a stage whose recipe sections differ."""
    source, target = RunLayout(store, source_run), RunLayout(store, run)
    copied = []
    with iteration_lock(store, target.lock_url(1)):  # what it copies, `run`'s iteration-1 flow writes
        # The hub commits `source_run` pinned, so `run` reads the same prompts and base (sppo.revisions).
        pins = store.path_of(source.revisions_url())
        for path in store.fs.glob(f"{pins}/*.json") if store.fs.exists(pins) else []:
            dst = f"{target.revisions_url()}/{path.rsplit('/', 1)[-1]}"
            if not store.exists(dst):
                store.put_bytes(dst, store.fs.cat_file(path))
        pairs = [(source.model_url(0), target.model_url(0))]
        pairs += [(source.stage_url(1, s), target.stage_url(1, s)) for s in SHARED_BY_LOSSES if data]
        for src, dst in pairs:
            if store.manifest(src) is not None and store.manifest(dst) is None:
                store.copy_stage(src, dst)
                copied.append(dst)
        if store.manifest(source.model_url(0)) is not None:
            base_key = store.manifest_digest(source.model_url(0))[:16]
            answers = store.path_of(source.answers_url())
            for path in store.fs.glob(f"{answers}/{base_key}-*.json") if store.fs.exists(answers) else []:
                dst = f"{target.answers_url()}/{path.rsplit('/', 1)[-1]}"
                if not store.exists(dst):
                    store.put_bytes(dst, store.fs.cat_file(path))
    return copied
