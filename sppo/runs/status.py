"""Read a store's runs without changing it: which runs it holds, each iteration's stages (done / unfinished /
missing), superseded folders and locks, a stage's manifest and evaluate's metrics, and the run's best pointer
(`<run>/BEST.json`, which sppo.runs.best writes). RunsError is the user error every `python -m sppo` inspection
command reports with exit code 2."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from sppo.artifacts import BEST_FILE, METRICS_FILE, STAGES, decode_answers
from sppo.iteration import process_alive
from sppo.names import check_run_name
from sppo.store import ArtifactStore, CorruptArtifactError, Manifest, RunLayout

ITER_RE = re.compile(r"^iter-(\d{3,})$")
LOCK_RE = re.compile(r"^iter-(\d{3,})\.lock$")
SUPERSEDED_RE = re.compile(r"^(" + "|".join(STAGES) + r")\.superseded-")

DONE, UNFINISHED, MISSING, CORRUPT, NA = "done", "unfinished", "missing", "corrupt", "-"


class RunsError(ValueError):
    """A user error (unknown run, iteration or stage, nothing to show): exit code 2."""


# --------------------------------------------------------------------------------------------- reading


@dataclass
class IterationStatus:
    iteration: int
    stages: dict[str, str]  # stage -> done / unfinished / missing ("-" for stages iteration 0 never has)
    superseded: dict[str, int] = field(default_factory=dict)
    lock: dict[str, Any] | None = None  # the lock object's holder ({} if unreadable); None when unlocked

    @property
    def locked(self) -> bool:
        return self.lock is not None


@dataclass
class RunStatus:
    run: str
    iterations: list[IterationStatus]
    best: dict[str, Any] | None


def where(store: ArtifactStore) -> str:
    """The store root as messages name it: an absolute path for a local folder, the URL otherwise."""
    return store.path_of(store.root) if store.is_local else store.root


def _entries(store: ArtifactStore, url: str) -> dict[str, str]:
    """Names directly under url -> 'directory' or 'file'; {} when url does not exist."""
    path = store.path_of(url)
    store.fs.invalidate_cache(path)  # s3fs caches listings; a CLI reads what is there now
    try:
        listing = store.fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for entry in listing:
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        if name:
            out[name] = "directory" if entry.get("type") == "directory" else "file"
    return out


def list_runs(store: ArtifactStore) -> list[str]:
    """Folders of the store holding iterations (or a best pointer), sorted."""
    if not store.exists(store.root):
        raise RunsError(f"store {where(store)} does not exist (pass --store or --config)")
    runs = []
    for name, kind in sorted(_entries(store, store.root).items()):
        if kind != "directory" or name.startswith("."):
            continue
        inside = _entries(store, store.join(name))
        if BEST_FILE in inside or any(ITER_RE.match(n) or LOCK_RE.match(n) for n in inside):
            runs.append(name)
    return runs


def require_run(store: ArtifactStore, run: str) -> dict[str, str]:
    """The run folder's entries, or a RunsError naming the run, the store and the runs it does hold."""
    check_run_name(run)
    inside = _entries(store, store.join(run))
    if BEST_FILE in inside or any(ITER_RE.match(n) or LOCK_RE.match(n) for n in inside):
        return inside
    try:
        known = ", ".join(list_runs(store)) or "none"
    except RunsError as err:
        raise RunsError(f"run {run!r} not found: {err}") from None
    raise RunsError(f"run {run!r} not found in store {where(store)} (runs there: {known})")


def _holder(store: ArtifactStore, url: str) -> dict[str, Any]:
    try:
        holder = json.loads(store.read_bytes(url))
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(holder, dict):
        return {}
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        holder["alive"] = process_alive(holder["pid"])
    return holder


def iteration_status(store: ArtifactStore, run: str, iteration: int, lock: bool) -> IterationStatus:
    layout = RunLayout(store, run)
    url = layout.iteration_url(iteration)
    inside = _entries(store, url)
    stages = {}
    for stage in STAGES:
        if stage in inside:
            stages[stage] = stage_state(store, f"{url}/{stage}", hashes=False)
        elif f".{stage}.tmp" in inside:  # a local stage writing (or crashed) into its scratch folder
            stages[stage] = UNFINISHED
        else:
            stages[stage] = NA if iteration == 0 and stage != "model" else MISSING
    superseded: dict[str, int] = {}
    for name in inside:
        m = SUPERSEDED_RE.match(name)
        if m:
            superseded[m.group(1)] = superseded.get(m.group(1), 0) + 1
    holder = _holder(store, f"{url}.lock") if lock else None
    return IterationStatus(iteration, stages, superseded, holder)


def run_status(store: ArtifactStore, run: str) -> RunStatus:
    inside = require_run(store, run)
    numbers: dict[int, bool] = {}
    for name, kind in inside.items():
        if (m := ITER_RE.match(name)) and kind == "directory":
            numbers.setdefault(int(m.group(1)), False)
        elif m := LOCK_RE.match(name):
            numbers[int(m.group(1))] = True
    iterations = [iteration_status(store, run, n, numbers[n]) for n in sorted(numbers)]
    return RunStatus(run, iterations, read_best(store, run))


def stage_state(store: ArtifactStore, stage_url: str, hashes: bool) -> str:
    """done / unfinished / corrupt for a stage folder that exists: corrupt when its manifest is unreadable or
    its files do not match it (sizes; with `hashes` also sha256)."""
    status, manifest = read_manifest(store, stage_url)
    if manifest is None:
        return status
    return CORRUPT if store.stage_problem(stage_url, manifest, hashes) else DONE


def parse_iteration(text: str) -> int:
    m = re.fullmatch(r"(?:iter-)?(\d+)", text.strip())
    if not m:
        raise RunsError(f"iteration must be a number like 1, 001 or iter-001, got {text!r}")
    return int(m.group(1))


def require_iteration(store: ArtifactStore, run: str, iteration: int) -> None:
    status = run_status(store, run)
    numbers = [it.iteration for it in status.iterations]
    if iteration not in numbers:
        known = ", ".join(f"{n:03d}" for n in numbers) or "none"
        raise RunsError(f"run {run!r} has no iteration {iteration} in store {where(store)} (iterations there: {known})")


def read_manifest(store: ArtifactStore, stage_url: str) -> tuple[str, Manifest | None]:
    """(status, manifest): done with its manifest, or unfinished / missing / corrupt without one."""
    try:
        manifest = store.manifest(stage_url)
    except CorruptArtifactError:
        return CORRUPT, None
    if manifest is not None:
        return DONE, manifest
    return (UNFINISHED if store.exists(stage_url) else MISSING), None


def read_metrics(store: ArtifactStore, evaluate_url: str, manifest: Manifest) -> dict[str, Any]:
    """metrics.json of a finished evaluate stage, checked against the sha256 in its manifest."""
    url = f"{evaluate_url}/{METRICS_FILE}"
    try:
        data = store.read_bytes(url)
    except FileNotFoundError:
        raise CorruptArtifactError(
            f"{url} is listed in its manifest but missing; delete {evaluate_url} and rerun"
        ) from None
    expected = manifest.outputs.get(METRICS_FILE)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CorruptArtifactError(
            f"{url} does not match the sha256 in its manifest (corrupted or edited); delete {evaluate_url} and rerun"
        )
    try:
        return json.loads(data)
    except ValueError as err:
        raise CorruptArtifactError(f"{url}: unreadable ({err}); delete {evaluate_url} and rerun") from None


def answer_cache_problems(store: ArtifactStore, run: str) -> list[tuple[str, str]]:
    """(file name, problem) for each held-out answer cache entry whose checksum does not match its rows."""
    folder = RunLayout(store, run).answers_url()
    problems = []
    for name, kind in sorted(_entries(store, folder).items()):
        if kind != "file" or not name.endswith(".json") or name.startswith("."):
            continue
        if decode_answers(store.read_bytes(f"{folder}/{name}")) is None:
            problems.append((name, "checksum does not match (evaluate generates these answers again)"))
    return problems


# ------------------------------------------------------------------------------------------- best pointer


def best_url(store: ArtifactStore, run: str) -> str:
    return store.join(run, BEST_FILE)


def read_best(store: ArtifactStore, run: str) -> dict[str, Any] | None:
    url = best_url(store, run)
    try:
        pointer = json.loads(store.read_bytes(url))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise RunsError(f"{url} is unreadable ({err}); mark the best iteration again") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("iteration"), int):
        raise RunsError(f"{url} is not a best pointer; mark the best iteration again")
    return pointer
