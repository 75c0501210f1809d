"""Iteration 0: the run's base policy written as a plain HF model folder."""

from __future__ import annotations

from pathlib import Path

from sppo.config import RecipeConfig
from sppo.models import prepare_base_model
from sppo.revisions import hub_model_revision, revision_parts
from sppo.settings import fingerprint
from sppo.store import Manifest, commit_stage


def prepare_base(recipe: RecipeConfig, out: str) -> Manifest:
    def produce(tmp: Path, _: dict[str, Path]) -> dict:
        m, revision = recipe.model, hub_model_revision(recipe.model)
        prepare_base_model(m.base, tmp, m.tokenizer, m.trust_remote_code, revision)
        return {"source": m.base, **({"revision": revision} if revision else {})}

    return commit_stage(recipe.open_store(), out, "model", fingerprint_of(recipe), {}, produce)


def fingerprint_of(recipe: RecipeConfig) -> str:
    return fingerprint(recipe.model, *revision_parts(hub_model_revision(recipe.model)))
