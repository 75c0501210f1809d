"""The artifact store: where each stage of each iteration writes, and how a stage commits.

The store is any fsspec location: a local folder (the embedded default) or `s3://bucket/prefix` through
s3fs (endpoint, region and credentials come from the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION; they are never logged).

Layout: <root>/<run>/iter-NNN/<stage>/ with a manifest.json written last. Stages compute on local files:
inputs are read through `StageInputs` (the folder itself for a local store, a verified download
otherwise) and outputs are written into a local scratch folder, then committed. A local commit is one
rename of the whole folder; a remote one uploads every file and the manifest last. Either way a crash
leaves nothing that looks finished: a folder without a manifest is garbage and is replaced."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import posixpath
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from sppo.artifacts import ANSWERS_FOLDER, MANIFEST, REVISIONS_FOLDER, STAGES
from sppo.names import check_run_name, check_store_url

log = logging.getLogger(__name__)

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "store"


class StoreError(RuntimeError):
    pass


class DiskFullError(ValueError):
    """No space left where the pipeline writes. Not retried (a ValueError, like a recipe mistake): a full disk
    does not empty itself in the seconds between retries."""


@contextlib.contextmanager
def disk_full_named(where: str | Path, needed: int | None = None) -> Iterator[None]:
    """Turn an OSError ENOSPC raised inside into a DiskFullError naming the path written (the error's own file
    name, else `where`), the space free there and, when the caller knows it, the space needed."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        path = Path(err.filename or where)
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        space = f"{_bytes_text(shutil.disk_usage(existing).free)} free"
        if needed is not None:
            space += f", {_bytes_text(needed)} needed"
        raise DiskFullError(
            f"no space left on the device writing {path}: {space}; free space there (or move the store, "
            "HF_HOME or TMPDIR to a larger disk) and run again"
        ) from err


def _bytes_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class NonFiniteError(ValueError):
    """A stage computed NaN or infinity: never committed."""


class CorruptArtifactError(ValueError):
    """An artifact does not match its manifest: never use it silently."""


@dataclass(frozen=True)
class Manifest:
    stage: str
    fingerprint: str  # hash of the recipe sections this stage depends on
    inputs: dict[str, str]  # input name -> sha256 of that input's manifest
    outputs: dict[str, str]  # file (relative) -> sha256 of its content
    rows: int | None = None
    seconds: float = 0.0
    code_version: str = ""
    created: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # file (relative) -> bytes; empty in older manifests
    # Not written: True when commit_stage found this stage finished and verified instead of running it.
    reused: bool = field(default=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            fields.pop("reused", None)
            return cls(**fields)
        except (ValueError, TypeError) as err:
            raise CorruptArtifactError(
                f"{where}: unreadable manifest ({err}); delete that stage folder and rerun"
            ) from None

    def content_digest(self) -> str:
        """sha256 of what the stage is (its recipe fingerprint, inputs and output files), not of when or how
        fast it ran: a stage redone after damage that comes out the same keeps its digest, so the stages
        that read it stay valid."""
        what = {"stage": self.stage, "fingerprint": self.fingerprint, "inputs": self.inputs, "outputs": self.outputs}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        del fields["reused"]
        return json.dumps(fields, indent=2, sort_keys=True, allow_nan=False).encode()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> str:
    """The checkout's git commit; in an image without git, the commit it was built from (the build
    argument SPPO_CODE_VERSION of docker/Dockerfile.*); else "unknown"."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit or os.environ.get("SPPO_CODE_VERSION") or "unknown"


FILE_MODE_ENV, DIR_MODE_ENV = "SPPO_FILE_MODE", "SPPO_DIR_MODE"


def _mode(env: str, default: int) -> int:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise StoreError(f"{env}={raw!r} is not a permission mode: write it in octal, e.g. {env}={default:o}")
    return mode


def store_modes() -> tuple[int, int]:
    """The permissions of what a local store writes, (files, folders): 0640 and 0750, readable by the
    owner's group and nobody else, unless SPPO_FILE_MODE / SPPO_DIR_MODE (octal) say otherwise."""
    return _mode(FILE_MODE_ENV, 0o640), _mode(DIR_MODE_ENV, 0o750)


def make_folder(path: Path) -> None:
    """mkdir -p, each folder it creates given the store's folder mode (mkdir's own mode is cut by umask)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    _, dir_mode = store_modes()
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        folder.chmod(dir_mode)


def apply_modes(folder: Path) -> None:
    """The store's modes on a folder and everything in it (library writers such as safetensors choose their
    own: model.safetensors came out 0600, JSON 0644)."""
    file_mode, dir_mode = store_modes()
    folder.chmod(dir_mode)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(dir_mode if path.is_dir() else file_mode)


class ArtifactStore:
    """A root URL and the fsspec filesystem behind it. Stage folders are named by URL strings."""

    def __init__(self, root: str | Path, resume_hashes: bool | None = None):
        self.root = check_store_url(str(root)).rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        # Before a finished stage is reused, its files' sizes are always checked and, when this is True, their
        # sha256 too. Default: locally yes (cheap); remotely no (it would download every byte), since each
        # stage checks the sha256 of every input it downloads anyway.
        self.resume_hashes = self.is_local if resume_hashes is None else resume_hashes

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def path_of(self, url: str) -> str:
        """The filesystem path of a URL (what fsspec calls are given)."""
        return self.fs._strip_protocol(url)

    def exists(self, url: str) -> bool:
        return self.fs.exists(self.path_of(url))

    def read_bytes(self, url: str) -> bytes:
        return self.fs.cat_file(self.path_of(url))

    def manifest(self, stage_url: str) -> Manifest | None:
        url = f"{stage_url}/{MANIFEST}"
        try:
            data = self.read_bytes(url)
        except FileNotFoundError:
            return None
        return Manifest.from_bytes(data, url)

    def manifest_digest(self, stage_url: str) -> str:
        """The content digest of a finished stage's manifest (Manifest.content_digest): what later stages,
        answer caches and best pointers record as the identity of this stage."""
        manifest = self.manifest(stage_url)
        if manifest is None:
            raise StoreError(f"{stage_url} has no {MANIFEST}: that stage never finished; run its iteration first")
        return manifest.content_digest()

    def local_copy(self, stage_url: str) -> Path:
        """A local folder holding the finished stage, every file checked against its manifest.

        Local stores verify in place; remote ones download once into .cache/store/, keyed by the manifest."""
        manifest = self.manifest(stage_url)
        if manifest is None:
            raise StoreError(f"{stage_url} has no {MANIFEST}: that stage never finished; run its iteration first")
        if self.is_local:
            folder = Path(self.path_of(stage_url))
            _verify(folder, manifest, stage_url)
            return folder
        digest = self.manifest_digest(stage_url)
        folder = CACHE / digest[:24]
        if (folder / MANIFEST).is_file() and local_problem(folder, manifest, hashes=False) is None:
            return folder
        tmp = folder.with_name(f"{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_folder(tmp)
        for name in manifest.outputs:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(self.path_of(f"{stage_url}/{name}"), str(tmp / name))
            except FileNotFoundError:
                raise CorruptArtifactError(
                    f"{stage_url}/{name} is listed in its manifest but missing from the store; "
                    "delete that stage folder and rerun"
                ) from None
        _verify(tmp, manifest, stage_url)
        (tmp / MANIFEST).write_bytes(manifest.to_bytes())
        apply_modes(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder

    def put_bytes(self, url: str, data: bytes) -> None:
        """Write one small object whole: readers see all of it or nothing (an S3 PUT is atomic; a local
        file is written beside and renamed)."""
        if self.is_local:
            path = Path(self.path_of(url))
            with disk_full_named(path, needed=len(data)):
                make_folder(path.parent)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(data)
                tmp.chmod(store_modes()[0])
                tmp.replace(path)
        else:
            self.fs.pipe_file(self.path_of(url), data)

    def create_exclusive(self, url: str, data: bytes) -> None:
        """Create an object holding `data` only if it does not exist yet; FileExistsError otherwise.

        Creation and content are one step, so nobody ever reads it empty: locally the data is written under a
        private name and hard-linked into place (link fails if the name exists); on S3 it is one conditional
        PUT (If-None-Match: *) carrying the body."""
        if not self.is_local:
            self.fs.pipe_file(self.path_of(url), data, mode="create")
            return
        path = Path(self.path_of(url))
        make_folder(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(store_modes()[0])
        try:
            os.link(tmp, path)
        finally:
            tmp.unlink()

    def remove(self, url: str) -> None:
        if self.exists(url):
            self.fs.rm(self.path_of(url), recursive=True)

    def publish(self, scratch: Path, stage_url: str, manifest: Manifest, replace: bool = False) -> None:
        """Move a finished scratch folder into place. Anything already there without a manifest is
        leftover from a crash and is replaced; a finished stage of another recipe is kept aside, unless
        `replace` (its files no longer match its manifest: garbage, not a version worth keeping)."""
        if not replace and self.manifest(stage_url) is not None:
            aside = f"{stage_url}.superseded-{time.strftime('%Y%m%dT%H%M%S')}"
            self.fs.mv(self.path_of(stage_url), self.path_of(aside), recursive=True)
        else:
            self.remove(stage_url)
        if self.is_local:
            (scratch / MANIFEST).write_bytes(manifest.to_bytes())
            apply_modes(scratch)
            scratch.rename(self.path_of(stage_url))
            return
        for name in manifest.outputs:  # streamed file by file, the manifest last
            self.fs.put_file(str(scratch / name), self.path_of(f"{stage_url}/{name}"))
        self.put_bytes(f"{stage_url}/{MANIFEST}", manifest.to_bytes())
        shutil.rmtree(scratch)

    def stage_problem(self, stage_url: str, manifest: Manifest, hashes: bool) -> str | None:
        """What is wrong with a finished stage's files in the store ("<file> is ..."), or None. Sizes always;
        sha256 when `hashes` (on a remote store that reads every byte)."""
        if self.is_local:
            return local_problem(Path(self.path_of(stage_url)), manifest, hashes)
        folder = self.path_of(stage_url)
        self.fs.invalidate_cache(folder)
        try:
            listed = {posixpath.relpath(e["name"], folder): e for e in self.fs.find(folder, detail=True).values()}
        except FileNotFoundError:
            listed = {}
        for name, digest in manifest.outputs.items():
            entry = listed.get(name)
            if entry is None:
                return f"{name} is listed in its manifest but missing"
            expected = manifest.sizes.get(name)
            if expected is not None and entry.get("size") != expected:
                return f"{name} has {entry.get('size')} bytes, its manifest says {expected} (truncated or changed)"
            if hashes:
                h = hashlib.sha256()
                with self.fs.open(self.path_of(f"{stage_url}/{name}"), "rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                        h.update(chunk)
                if h.hexdigest() != digest:
                    return f"{name} does not match the sha256 in its manifest (corrupted or truncated)"
        return None

    def copy_stage(self, source_url: str, stage_url: str) -> None:
        """Commit a verified copy of a finished stage under another URL, manifest unchanged (so the copy's
        manifest digest, which downstream stages and answer caches key on, is the source's). Local files
        are hard-linked: artifacts are never modified in place."""
        folder = self.local_copy(source_url)
        manifest = self.manifest(source_url)
        scratch = self.scratch_for(stage_url)
        shutil.rmtree(scratch, ignore_errors=True)
        make_folder(scratch)
        for name in manifest.outputs:
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / name, scratch / name)
            except OSError:  # another filesystem
                shutil.copy2(folder / name, scratch / name)
        self.publish(scratch, stage_url, manifest)

    def scratch_for(self, stage_url: str) -> Path:
        """Where a stage writes before committing: beside its folder when local (one rename commits it)."""
        if self.is_local:
            final = Path(self.path_of(stage_url))
            return final.parent / f".{final.name}.tmp"
        return CACHE / "scratch" / hashlib.sha256(stage_url.encode()).hexdigest()[:24]


def _verify(folder: Path, manifest: Manifest, where: str) -> None:
    problem = local_problem(folder, manifest, hashes=True)
    if problem:
        raise CorruptArtifactError(f"{where}/{problem}; delete {where} and rerun")


def local_problem(folder: Path, manifest: Manifest, hashes: bool) -> str | None:
    """What is wrong with a local stage folder against its manifest ("<file> is ..."), or None.

    Sizes are always compared (where the manifest has them); sha256 only when `hashes`."""
    for name, digest in manifest.outputs.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is listed in its manifest but missing"
        expected = manifest.sizes.get(name)
        if expected is not None and path.stat().st_size != expected:
            return f"{name} has {path.stat().st_size} bytes, its manifest says {expected} (truncated or changed)"
        if hashes and file_digest(path) != digest:
            return f"{name} does not match the sha256 in its manifest (corrupted or truncated)"
    return None


@dataclass(frozen=True)
class RunLayout:
    store: ArtifactStore
    run: str

    def __post_init__(self) -> None:
        check_run_name(self.run)  # every path of a run is built here: nothing can climb out of the store

    def iteration_url(self, iteration: int) -> str:
        return self.store.join(self.run, f"iter-{iteration:03d}")

    def stage_url(self, iteration: int, stage: str) -> str:
        if stage not in STAGES:
            raise StoreError(f"unknown stage {stage!r}; stages are {STAGES}")
        return f"{self.iteration_url(iteration)}/{stage}"

    def model_url(self, iteration: int) -> str:
        """pi_t: iteration 0 holds the base model, iteration t the policy trained in iteration t."""
        return self.stage_url(iteration, "model")

    def lock_url(self, iteration: int) -> str:
        """The one-writer lock of an iteration. The base model (iteration 0) is iteration 1's: the iteration-1
        flow prepares it, and the lock keeps `prepare-base` from writing it (and its scratch) at the same time."""
        return f"{self.iteration_url(max(iteration, 1))}.lock"

    def answers_url(self) -> str:
        return self.store.join(self.run, ANSWERS_FOLDER)

    def revisions_url(self) -> str:
        """The folder of the commits this run pinned hub repos at (sppo.revisions)."""
        return self.store.join(self.run, REVISIONS_FOLDER)

    def revision_url(self, repo_type: str, repo_id: str, requested: str | None) -> str:
        """The record of the commit this run pinned a hub repo at (`requested`: the recipe's revision, None for
        the default branch), written once on first use."""
        key = hashlib.sha256(f"{repo_type}:{repo_id}@{requested or ''}".encode()).hexdigest()[:16]
        return f"{self.revisions_url()}/{repo_type}-{key}.json"


def commit_stage(
    store: ArtifactStore,
    out: str,
    stage: str,
    fingerprint: str,
    inputs: dict[str, str],
    produce: Callable[[Path, dict[str, Path]], dict[str, Any]],
) -> Manifest:
    """Run `produce(scratch, local_inputs)` unless `out` already holds this exact stage, then commit it.

    produce writes its files into scratch and returns {"rows": ..., **info}; local_inputs maps each input
    name to a verified local copy. A finished stage whose fingerprint and input manifests match, and whose
    files still match its manifest, is returned as is (with `reused` set): re-running an iteration redoes
    nothing that finished, and redoes what was damaged since."""
    input_digests = {name: store.manifest_digest(url) for name, url in inputs.items()}
    try:
        existing = store.manifest(out)
    except CorruptArtifactError:  # an unreadable manifest: the stage is redone like any damaged one
        log.warning("%s/%s is unreadable; redoing the stage", out, MANIFEST)
        existing = None
    damaged = existing is None and store.exists(f"{out}/{MANIFEST}")
    if existing and existing.fingerprint == fingerprint and existing.inputs == input_digests:
        problem = store.stage_problem(out, existing, hashes=store.resume_hashes)
        if problem is None:
            log.info("%s: reused, finished at %s", out, existing.created)
            return dataclasses.replace(existing, reused=True)
        log.warning("%s: %s; redoing the stage", out, problem)
        damaged = True
    scratch = store.scratch_for(out)
    with disk_full_named(scratch):  # the inputs' download (remote stores), the scratch folder, the commit
        local_inputs = {name: store.local_copy(url) for name, url in inputs.items()}
        shutil.rmtree(scratch, ignore_errors=True)
        make_folder(scratch)
        started = time.time()
        try:
            with disk_full_named(scratch):  # here, before the cleanup below frees what the stage wrote
                info = dict(produce(scratch, local_inputs))
            for key, value in info.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise NonFiniteError(f"{out}: the stage produced {key}={value}; nothing was committed")
        except BaseException:  # also Ctrl-C and a stage timeout
            shutil.rmtree(scratch, ignore_errors=True)  # a failed stage leaves nothing half-written behind
            raise
        rows = info.pop("rows", None)
        files = [p for p in sorted(scratch.rglob("*")) if p.is_file()]
        manifest = Manifest(
            stage=stage,
            fingerprint=fingerprint,
            inputs=input_digests,
            outputs={str(p.relative_to(scratch)): file_digest(p) for p in files},
            rows=rows,
            seconds=round(time.time() - started, 2),
            code_version=code_version(),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            info=info,
            sizes={str(p.relative_to(scratch)): p.stat().st_size for p in files},
        )
        store.publish(scratch, out, manifest, replace=damaged)
    return manifest
