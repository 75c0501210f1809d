"""Hub content pinned to a commit (sppo.revisions), through huggingface_hub's own offline machinery: the hub's
cache laid out as huggingface_hub lays it out (snapshots/<commit>/, refs/<branch>) and HF_HUB_OFFLINE on, so
resolving a branch, reading a dataset and loading a model run the real hub code and nothing is downloaded. An
upstream change is a new commit that the branch's ref moves to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sppo.config import ConfigError, load_recipe
from sppo.prompts import load_splits
from sppo.revisions import RevisionError, pin_revisions
from sppo.settings import output_fields
from sppo.stages import base, evaluate, generate
from sppo.store import file_digest

from .conftest import REPO

A, B, C = "a" * 40, "b" * 40, "c" * 40


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An offline hub cache under tmp_path; returns its folder."""
    import datasets
    import huggingface_hub

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    return cache


def _publish(cache: Path, repo_type: str, repo_id: str, commit: str, files: dict[str, bytes], branch: str = "main"):
    """Commit `files` to a repo of the cached hub and move `branch` to it, as a download of that commit leaves it."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        (repo / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / name).write_bytes(data)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)


def _prompts(texts: list[str]) -> dict[str, bytes]:
    lines = [json.dumps({"id": f"p{i}", "prompt": t}) for i, t in enumerate(texts)]
    return {"prompts.jsonl": "\n".join(lines).encode()}


def _recipe(store: Path, *overrides: str):
    return load_recipe(
        REPO / "configs" / "smoke.yaml",
        [f"store={store}", "data.eval_prompts=4", "data.prompts_per_iteration=4", *overrides],
    )


def test_hub_prompts_are_pinned_on_first_use_and_read_at_that_commit_after_upstream_moves(hub, tmp_path):
    first = [f"Write a haiku about the number {i}." for i in range(20)]
    _publish(hub, "dataset", "acme/prompts", A, _prompts(first))
    recipe = _recipe(tmp_path / "store", "data.prompts=acme/prompts")

    pinned = pin_revisions(recipe, "r1")
    assert pinned.data.revision == A
    records = list((tmp_path / "store" / "r1" / "hub-revisions").glob("dataset-*.json"))
    assert [json.loads(r.read_text())["revision"] for r in records] == [A]
    splits = load_splits(pinned.data)
    assert sorted(p.prompt for p in splits.evaluation + splits.training_pool) == sorted(first)

    # Upstream edits the dataset: main moves to a commit with other prompts.
    _publish(hub, "dataset", "acme/prompts", B, _prompts([f"Explain the number {i}." for i in range(20)]))
    again = pin_revisions(recipe, "r1")
    assert again.data.revision == A, "a run keeps the commit it pinned"
    assert load_splits(again.data) == splits, "the same prompts in the same splits"
    newer = pin_revisions(recipe, "r2")
    assert newer.data.revision == B, "a new run pins what main is now"

    # The commit is part of the fingerprints of the stages that read the prompts, even with the same content.
    _publish(hub, "dataset", "acme/prompts", C, _prompts(first), branch="same-content")
    same = pin_revisions(_recipe(tmp_path / "store", "data.prompts=acme/prompts", f"data.revision={C}"), "r1")
    assert same.data.revision == C and load_splits(same.data) == splits
    for stage in (lambda r: generate.fingerprint_of(r, 1), evaluate.fingerprint_of):
        assert stage(pinned) == stage(again) != stage(same)
    assert base.fingerprint_of(pinned) == base.fingerprint_of(same), "the base does not read the prompts"


def test_a_branch_name_is_resolved_to_its_commit_once(hub, tmp_path):
    _publish(hub, "dataset", "acme/prompts", A, _prompts([f"Prompt {i}" for i in range(12)]), branch="v1")
    recipe = _recipe(tmp_path / "store", "data.prompts=acme/prompts", "data.revision=v1")
    assert pin_revisions(recipe, "r").data.revision == A
    _publish(hub, "dataset", "acme/prompts", B, _prompts([f"Other {i}" for i in range(12)]), branch="v1")
    assert pin_revisions(recipe, "r").data.revision == A


def test_a_hub_base_model_is_loaded_at_the_pinned_commit_and_its_manifest_says_which(hub, tmp_path, tiny_model_dir):
    files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    _publish(hub, "model", "acme/tiny-chat", A, files)
    recipe = _recipe(tmp_path / "store", "model.base=acme/tiny-chat", "model.tokenizer=null")

    pinned = pin_revisions(recipe, "r")
    assert pinned.model.revision == A
    out = str(tmp_path / "store" / "r" / "iter-000" / "model")
    manifest = base.prepare_base(pinned, out)
    assert manifest.info == {"source": "acme/tiny-chat", "revision": A}
    assert manifest.outputs["model.safetensors"] == file_digest(tiny_model_dir / "model.safetensors")

    _publish(hub, "model", "acme/tiny-chat", B, files)  # the same weights under a new commit
    moved = pin_revisions(_recipe(tmp_path / "store", "model.base=acme/tiny-chat", f"model.revision={B}"), "r")
    assert base.fingerprint_of(moved) != base.fingerprint_of(pinned), "a changed revision redoes prepare-base"
    assert generate.fingerprint_of(moved, 1) == generate.fingerprint_of(pinned, 1)  # it reads the base's manifest


def test_an_unresolvable_revision_is_a_mistake_naming_the_field(hub, tmp_path):
    recipe = _recipe(tmp_path / "store", "data.prompts=acme/absent")
    with pytest.raises(RevisionError, match=r"^data.revision: cannot resolve dataset 'acme/absent'"):
        pin_revisions(recipe, "r")


def test_local_sources_are_not_pinned_and_their_fingerprints_do_not_change(tmp_path):
    recipe = _recipe(tmp_path / "store")  # local prompts, a 'random:' base with SmolLM2's tokenizer
    assert pin_revisions(recipe, "r") is recipe
    assert not (tmp_path / "store" / "r").exists(), "nothing recorded for local sources"
    assert "revision" not in output_fields(recipe.data) and "revision" not in output_fields(recipe.model)
    with pytest.raises(ConfigError, match="data.revision='main' is set but data.prompts"):
        pin_revisions(_recipe(tmp_path / "store", "data.revision=main"), "r")
    with pytest.raises(ConfigError, match="model.revision='main' is set but model.base"):
        pin_revisions(_recipe(tmp_path / "store", "model.revision=main"), "r")


def test_a_run_sharing_another_s_first_iteration_shares_its_pins(hub, tmp_path):
    from sppo.iteration import share_first_iteration

    _publish(hub, "dataset", "acme/prompts", A, _prompts([f"Prompt {i}" for i in range(12)]))
    recipe = _recipe(tmp_path / "store", "data.prompts=acme/prompts")
    pin_revisions(recipe, "sppo")
    _publish(hub, "dataset", "acme/prompts", B, _prompts([f"Other {i}" for i in range(12)]))
    share_first_iteration(recipe.open_store(), "sppo", "dpo")
    assert pin_revisions(recipe, "dpo").data.revision == A
    shutil.rmtree(hub)  # nothing is resolved again: the pins are recorded
    assert pin_revisions(recipe, "dpo").data.revision == A
