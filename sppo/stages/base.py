"""Iteration 0: the run's base policy written as a plain HF model folder."""

from __future__ import annotations

from pathlib import Path

from sppo.config import RecipeConfig
from sppo.models import prepare_base_model
from sppo.settings import fingerprint
from sppo.store import Manifest, commit_stage


def prepare_base(recipe: RecipeConfig, out: str) -> Manifest:
    def produce(tmp: Path, _: dict[str, Path]) -> dict:
        m = recipe.model
        prepare_base_model(m.base, tmp, tokenizer_source=m.tokenizer, trust_remote_code=m.trust_remote_code)
        return {"source": m.base}

    return commit_stage(recipe.open_store(), out, "model", fingerprint_of(recipe), {}, produce)


def fingerprint_of(recipe: RecipeConfig) -> str:
    return fingerprint(recipe.model)
