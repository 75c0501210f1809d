"""Reading a run's held-out answer cache (<run>/eval-answers/, written by the evaluate stage): what the
diagnostics and the report over seeds read a model's answers from, without generating them again."""

from __future__ import annotations

from sppo.artifacts import decode_answers
from sppo.store import ArtifactStore, RunLayout


def cached_answers(store: ArtifactStore, layout: RunLayout, model_url: str) -> dict[str, str]:
    """A model's held-out answers from the run's answer cache (prompt id -> answer), {} if none is cached."""
    prefix = store.manifest_digest(model_url)[:16]
    folder = store.path_of(layout.answers_url())
    for path in sorted(store.fs.glob(f"{folder}/{prefix}-*.json")) if store.fs.exists(folder) else []:
        rows = decode_answers(store.fs.cat_file(path))
        if rows:
            return {r["prompt_id"]: r["response"] for r in rows}
    return {}
