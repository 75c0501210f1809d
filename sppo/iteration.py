"""Which folders an iteration reads and writes, checked before any work starts, and the one-writer lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator

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


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def iteration_lock(
    store: ArtifactStore, url: str, wait_seconds: float = 0.0, poll_seconds: float = 2.0
) -> Iterator[None]:
    """Hold `url` (an object created only if absent: O_EXCL locally, a conditional PUT on S3) while an
    iteration writes. A second writer waits up to wait_seconds, then fails naming the holder. A lock left
    by a process that died on this host (kill -9, OOM) is taken over."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            store.create_exclusive(url, json.dumps(me).encode())
            break
        except FileExistsError:
            try:
                holder = json.loads(store.read_bytes(url))
            except (FileNotFoundError, ValueError):
                continue  # released (or being written) between our two calls: try again
            if holder.get("host") == me["host"] and not process_alive(int(holder.get("pid", -1))):
                log.warning("taking over %s from dead process %s", url, holder.get("pid"))
                store.remove(url)
                continue
            if time.monotonic() >= deadline:
                raise IterationLocked(
                    f"{url} is held by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: "
                    "another run of this iteration is writing; wait for it to finish (or pass a lock wait), or "
                    "delete that lock object if its process is gone"
                ) from None
            time.sleep(poll_seconds)
    try:
        yield
    finally:
        store.remove(url)


# Iteration 1 samples from pi_0, the base, whatever loss trains on the result.
SHARED_BY_LOSSES = ("generate", "rank", "dataset")


def share_first_iteration(store: ArtifactStore, source_run: str, run: str) -> list[str]:
    """Start `run` from `source_run`'s base model, iteration-1 data and the base's held-out answers, so
    runs that differ only in the loss sample and judge iteration 1 once. Copies what `run` lacks and
    returns the stage URLs it copied. Each copy still has to match `run`'s recipe: the flow checks every
    stage's fingerprint and redoes a stage whose recipe sections differ."""
    source, target = RunLayout(store, source_run), RunLayout(store, run)
    pairs = [(source.model_url(0), target.model_url(0))]
    pairs += [(source.stage_url(1, s), target.stage_url(1, s)) for s in SHARED_BY_LOSSES]
    copied = []
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
