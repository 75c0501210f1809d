"""The held-out answer cache answers the prompts it was asked, never another prompt set's under the same path."""

import json
import logging
from pathlib import Path

import pytest

from sppo.artifacts import decode_answers, encode_answers
from sppo.config import load_recipe
from sppo.generators import HFGeneratorConfig
from sppo.prompts import load_splits
from sppo.stages import evaluate
from sppo.stages.base import prepare_base
from sppo.store import RunLayout

from .conftest import REPO


def _write_prompts(path, texts):
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))


@pytest.fixture
def world(tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.jsonl"
    _write_prompts(prompts, ["Write a poem about the sea.", "List three red fruits.", "Explain why the sky is blue."])
    recipe = load_recipe(
        REPO / "configs" / "smoke.yaml",
        [
            f"store={tmp_path / 'store'}",
            f"model.base=random:{REPO / 'configs' / 'tiny-llama.json'}",
            f"data.prompts={prompts}",
            "data.eval_prompts=2",
            "evaluate.max_new_tokens=2",
        ],
    )
    layout = RunLayout(recipe.open_store(), "cache")
    prepare_base(recipe, layout.model_url(0))
    engines = []
    build = HFGeneratorConfig.build
    monkeypatch.setattr(HFGeneratorConfig, "build", lambda *a, **k: engines.append(1) or build(*a, **k))
    return recipe, layout, prompts, engines


def _answers(recipe, layout):
    store, model_url = layout.store, layout.model_url(0)
    prompts = load_splits(recipe.data).evaluation
    return prompts, evaluate.answers(
        recipe, store, model_url, store.local_copy(model_url), prompts, layout.answers_url()
    )


def test_prompt_file_edited_in_place_is_answered_again(world):
    recipe, layout, prompts_file, engines = world
    _, first = _answers(recipe, layout)
    _, again = _answers(recipe, layout)
    assert again == first and len(engines) == 1, "the same prompts are read back from the cache"
    _write_prompts(prompts_file, ["Give me a pancake recipe.", "Summarize a story.", "Answer in two sentences."])
    prompts, edited = _answers(recipe, layout)
    assert len(engines) == 2, "the edited prompts were answered again, not read from the old prompts' entry"
    assert [r["prompt_id"] for r in edited] == [p.id for p in prompts]


def test_entry_for_other_prompts_is_regenerated(world, caplog):
    recipe, layout, _, engines = world
    _answers(recipe, layout)
    (entry,) = Path(layout.answers_url()).iterdir()
    rows = decode_answers(entry.read_bytes())
    entry.write_bytes(encode_answers([{**r, "prompt_id": "elsewhere"} for r in rows]))
    with caplog.at_level(logging.WARNING, logger="sppo"):
        prompts, rows = _answers(recipe, layout)
    assert len(engines) == 2 and "answers other prompts" in caplog.text
    assert [r["prompt_id"] for r in rows] == [p.id for p in prompts]
