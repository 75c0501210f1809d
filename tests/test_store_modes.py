"""What a local store writes is 0640 (files) and 0750 (folders), model.safetensors included, unless
SPPO_FILE_MODE / SPPO_DIR_MODE say otherwise."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sppo.config import load_recipe
from sppo.stages.base import prepare_base
from sppo.store import ArtifactStore, RunLayout, StoreError, commit_stage

from .conftest import REPO


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_a_committed_base_model_is_0640_in_0750_folders(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("SPPO_FILE_MODE", raising=False)
    monkeypatch.delenv("SPPO_DIR_MODE", raising=False)
    root = tmp_path / "store"
    recipe = load_recipe(REPO / "configs" / "smoke.yaml", [f"store={root}", f"model.base={tiny_model_dir}"])
    layout = RunLayout(ArtifactStore(root), "modes")
    prepare_base(recipe, layout.model_url(0))
    layout.store.put_bytes(layout.store.join("modes", "BEST.json"), b"{}")
    layout.store.create_exclusive(layout.lock_url(1), b"{}")

    found = modes(root)
    assert "modes/iter-000/model/model.safetensors" in found
    assert "modes/iter-000/model/manifest.json" in found
    wrong = {name: oct(mode) for name, mode in found.items() if mode != (0o750 if (root / name).is_dir() else 0o640)}
    assert not wrong, f"not 0640 files in 0750 folders: {wrong}"


def test_the_modes_are_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("SPPO_FILE_MODE", "600")
    monkeypatch.setenv("SPPO_DIR_MODE", "0700")
    store = ArtifactStore(tmp_path / "store")

    def produce(scratch: Path, _: dict) -> dict:
        (scratch / "sub").mkdir()
        (scratch / "sub" / "rows.jsonl").write_text("{}\n")
        return {"rows": 1}

    commit_stage(store, store.join("run", "iter-001", "generate"), "generate", "f", {}, produce)
    found = modes(tmp_path / "store")
    assert found["run/iter-001/generate/sub/rows.jsonl"] == 0o600
    assert found["run/iter-001/generate/manifest.json"] == 0o600
    assert found["run/iter-001/generate/sub"] == 0o700
    assert found["run"] == 0o700


def test_a_mode_that_is_not_octal_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPPO_FILE_MODE", "rw-r-----")
    with pytest.raises(StoreError, match="SPPO_FILE_MODE='rw-r-----' is not a permission mode: .* SPPO_FILE_MODE=640"):
        ArtifactStore(tmp_path).put_bytes(ArtifactStore(tmp_path).join("x.json"), b"{}")


def test_the_prefect_database_folder_is_the_owners_only():
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    subprocess.run([sys.executable, "-c", "import flows"], cwd=REPO, env=env, check=True, timeout=120)
    assert stat.S_IMODE((REPO / ".cache" / "prefect").stat().st_mode) == 0o700
