"""Hub content pinned to a commit: a run reads the same prompts and the same base model whatever happens upstream.

A hub dataset (data.prompts) or model (model.base) is read at a revision: the recipe's data.revision or
model.revision (a commit sha, branch or tag; None: the default branch). On a run's first use that revision is
resolved to a commit sha and recorded in <run>/hub-revisions/ (created once, only if absent: concurrent first
uses agree on one); every later load of the run reads that commit, even if the branch has moved since. The flow
puts the commits into the recipe it hands its stages (`pin_revisions`), and the fingerprints of the stages that
read hub content (prepare-base, generate, evaluate) include them, so pinning another revision redoes exactly
those. Local files and folders are not pinned: their content is hashed into the fingerprints already.

Resolution is huggingface_hub's: the hub's answer online, the cache's refs/ with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from sppo.config import ConfigError, DataConfig, ModelConfig, RecipeConfig
from sppo.prompts import is_hub_dataset
from sppo.sources import is_hub_model
from sppo.store import RunLayout

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"[0-9a-f]{40}")


class RevisionError(ValueError):
    pass


def hub_model_repo(model: ModelConfig) -> str | None:
    """The hub repo model.revision pins: model.base when it is a hub id, or the tokenizer of a 'random:' base."""
    if is_hub_model(model.base):
        return model.base
    if model.base.startswith("random:") and model.tokenizer and is_hub_model(model.tokenizer):
        return model.tokenizer
    return None


def hub_model_revision(model: ModelConfig) -> str | None:
    """The revision the base's hub repo is read at (None: not from the hub, or not pinned)."""
    return model.revision if hub_model_repo(model) else None


def hub_data_revision(data: DataConfig) -> str | None:
    """The revision a hub prompt dataset is read at (None: a local file, or not pinned)."""
    return data.revision if is_hub_dataset(data.prompts) else None


def revision_parts(revision: str | None) -> tuple[str, ...]:
    """What a stage's fingerprint adds for the hub commit it reads: nothing for local content, so fingerprints of
    runs on local files are what they were before revisions existed."""
    return (revision,) if revision else ()


def hub_commit(repo_id: str, repo_type: str, requested: str | None) -> str:
    """The commit sha `requested` (a sha, branch or tag; None: the default branch) names in a hub repo now."""
    if requested and _COMMIT.fullmatch(requested):
        return requested
    from huggingface_hub import HfApi, is_offline_mode, snapshot_download

    if is_offline_mode():  # the cache maps branches and tags to commits (refs/), as offline loads use it
        folder = snapshot_download(repo_id, repo_type=repo_type, revision=requested, local_files_only=True)
        return Path(folder).name
    return HfApi().repo_info(repo_id, repo_type=repo_type, revision=requested).sha


def pin_revisions(recipe: RecipeConfig, run: str) -> RecipeConfig:
    """`recipe` with data.revision and model.revision set to the commits this run reads (resolved and recorded
    on first use, read back after), for the sources that come from the hub."""
    layout = RunLayout(recipe.open_store(), run)
    data, model = recipe.data, recipe.model
    if data.revision and not is_hub_dataset(data.prompts):
        raise ConfigError(f"data.revision={data.revision!r} is set but data.prompts {data.prompts!r} is a local file")
    if model.revision and not hub_model_repo(model):
        raise ConfigError(f"model.revision={model.revision!r} is set but model.base {model.base!r} is not a hub id")
    updates = {}
    if is_hub_dataset(data.prompts):
        commit = _pinned(layout, "dataset", data.prompts, data.revision, "data.revision")
        updates["data"] = data.model_copy(update={"revision": commit})
    repo = hub_model_repo(model)
    if repo:
        commit = _pinned(layout, "model", repo, model.revision, "model.revision")
        updates["model"] = model.model_copy(update={"revision": commit})
    return recipe.model_copy(update=updates) if updates else recipe


def _pinned(layout: RunLayout, repo_type: str, repo_id: str, requested: str | None, field: str) -> str:
    url = layout.revision_url(repo_type, repo_id, requested)
    recorded = _read_record(layout, url)
    if recorded:
        return recorded
    try:
        commit = hub_commit(repo_id, repo_type, requested)
    except Exception as err:  # noqa: BLE001 - the hub, the network, the cache or the id: all the user's to fix
        said = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise RevisionError(
            f"{field}: cannot resolve {repo_type} {repo_id!r} at {requested or 'its default branch'} to a commit "
            f"({type(err).__name__}: {said}); check the id, the revision, the network and HF_TOKEN, or set {field} "
            "to a commit sha"
        ) from None
    record = {"repo_type": repo_type, "repo_id": repo_id, "requested": requested, "revision": commit}
    record["pinned_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        layout.store.create_exclusive(url, json.dumps(record, indent=2).encode())
    except FileExistsError:  # another process of this run pinned it first: its commit is the run's
        return _read_record(layout, url) or commit
    log.info("run %s: %s %s pinned at commit %s (%s)", layout.run, repo_type, repo_id, commit, url)
    return commit


def _read_record(layout: RunLayout, url: str) -> str | None:
    try:
        record = json.loads(layout.store.read_bytes(url))
    except FileNotFoundError:
        return None
    except ValueError:
        raise RevisionError(f"{url} is not a revision record this code wrote; delete it to pin again") from None
    commit = record.get("revision") if isinstance(record, dict) else None
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise RevisionError(f"{url} holds no commit sha; delete it to pin again")
    return commit
