"""The artifact store: where each stage of each iteration writes, and how a stage commits.

Layout: <root>/<run>/iter-NNN/<stage>/ with a manifest.json written last. A stage first writes into a
hidden temporary folder beside its final one and is renamed into place whole, so a crash leaves either
nothing or a complete, manifested stage, never a half-written one."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGES = ("generate", "rank", "dataset", "model", "evaluate")


class StoreError(RuntimeError):
    pass


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

    @classmethod
    def read(cls, stage_dir: Path) -> Manifest | None:
        path = stage_dir / MANIFEST
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))

    def write(self, stage_dir: Path) -> None:
        (stage_dir / MANIFEST).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))


def manifest_digest(stage_dir: Path) -> str:
    path = stage_dir / MANIFEST
    if not path.is_file():
        raise StoreError(f"{stage_dir} has no {MANIFEST}: that stage never finished; run its iteration first")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class RunLayout:
    root: Path
    run: str

    def iteration_dir(self, iteration: int) -> Path:
        return self.root / self.run / f"iter-{iteration:03d}"

    def stage_dir(self, iteration: int, stage: str) -> Path:
        if stage not in STAGES:
            raise StoreError(f"unknown stage {stage!r}; stages are {STAGES}")
        return self.iteration_dir(iteration) / stage

    def model_dir(self, iteration: int) -> Path:
        """pi_t: iteration 0 holds the base model, iteration t the policy trained in iteration t."""
        return self.stage_dir(iteration, "model")


def commit_stage(
    out_dir: Path,
    stage: str,
    fingerprint: str,
    inputs: dict[str, Path],
    produce: Callable[[Path], dict[str, Any]],
) -> Manifest:
    """Run `produce(tmp_dir)` unless out_dir already holds this exact stage, then commit it atomically.

    produce writes its files into tmp_dir and returns {"rows": ..., **info}. A finished stage whose
    fingerprint and input manifests match is returned as is: re-running an iteration redoes nothing done."""
    input_digests = {name: manifest_digest(path) for name, path in inputs.items()}
    existing = Manifest.read(out_dir)
    if existing and existing.fingerprint == fingerprint and existing.inputs == input_digests:
        log.info("%s: already done (%s), skipped", out_dir, existing.created)
        return existing
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.time()
    info = dict(produce(tmp))
    rows = info.pop("rows", None)
    manifest = Manifest(
        stage=stage,
        fingerprint=fingerprint,
        inputs=input_digests,
        outputs={str(p.relative_to(tmp)): file_digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        rows=rows,
        seconds=round(time.time() - started, 2),
        code_version=code_version(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        info=info,
    )
    manifest.write(tmp)
    if out_dir.exists():
        # Leftover of a crash, or a finished stage of another recipe: keep the latter, never overwrite it.
        if Manifest.read(out_dir) is None:
            shutil.rmtree(out_dir)
        else:
            out_dir.rename(out_dir.parent / f"{out_dir.name}.superseded-{time.strftime('%Y%m%dT%H%M%S')}")
    tmp.rename(out_dir)
    return manifest
