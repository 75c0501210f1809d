"""Mark an iteration's model as a run's best, and check that mark still holds.

The mark is one small pointer object, `<run>/BEST.json`, naming the model and the sha256 of its manifest (a
pointer, never a copy); sppo.runs.status reads it."""

from __future__ import annotations

import json
import time
from typing import Any

from sppo.runs.status import (
    CORRUPT,
    DONE,
    MISSING,
    UNFINISHED,
    RunsError,
    best_url,
    read_manifest,
    require_iteration,
    where,
)
from sppo.store import ArtifactStore, RunLayout


def mark_best(store: ArtifactStore, run: str, iteration: int) -> dict[str, Any]:
    """Point <run>/BEST.json at iteration's model: its URL and its manifest's sha256, nothing copied."""
    require_iteration(store, run, iteration)
    url = RunLayout(store, run).model_url(iteration)
    status, _ = read_manifest(store, url)
    if status != DONE:
        why = {
            UNFINISHED: "its model folder has no manifest.json (training unfinished or crashed)",
            MISSING: "it has no model folder (training has not run)",
            CORRUPT: "its model manifest is unreadable",
        }[status]
        raise RunsError(
            f"cannot mark iteration {iteration} of run {run!r} as best: {why} at {url} (store {where(store)})"
        )
    pointer = {
        "iteration": iteration,
        "model": store.path_of(url) if store.is_local else url,  # a local pointer must not depend on the cwd
        "manifest_sha256": store.manifest_digest(url),
        "marked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.put_bytes(best_url(store, run), (json.dumps(pointer, indent=2) + "\n").encode())
    return pointer


def check_best(store: ArtifactStore, run: str, pointer: dict[str, Any]) -> list[str]:
    """What no longer holds about a best pointer: [] when the model is still the one that was marked."""
    url = RunLayout(store, run).model_url(pointer["iteration"])
    status, _ = read_manifest(store, url)
    if status != DONE:
        return [f"iteration {pointer['iteration']}'s model at {url} is now {status} (no readable manifest.json)"]
    digest = store.manifest_digest(url)
    if digest != pointer.get("manifest_sha256"):
        then = str(pointer.get("manifest_sha256"))[:12]
        return [
            f"the model manifest at {url} changed since it was marked (sha256 {then} then, {digest[:12]} now): "
            "the model was retrained or replaced; check it and mark it again"
        ]
    return []
