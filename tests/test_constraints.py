"""The verifiable constraints and the prompt set built from them."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest

from sppo.constraints import KINDS, check, conflicts, describe, validate

ROOT = Path(__file__).resolve().parents[1]

# type -> (constraint, a reply that obeys it, a reply that does not)
EXAMPLES = {
    "max_words": (
        {"type": "max_words", "n": 5},
        "Tea calms me down.",
        "Tea calms me down every single evening.",
    ),
    "min_words": ({"type": "min_words", "n": 5}, "Tea calms me down nicely.", "Tea calms."),
    "include_keywords": (
        {"type": "include_keywords", "words": ["river", "light"]},
        "The Rivers caught the morning light.",
        "The riverbank was dark and quiet.",
    ),
    "exclude_words": (
        {"type": "exclude_words", "words": ["very"]},
        "Everything was calm.",
        "It was Very calm.",
    ),
    "bullet_count": (
        {"type": "bullet_count", "n": 3},
        "Tips:\n- water daily\n* use a big pot\n- give it sun",
        "Tips:\n- water daily\n- give it sun",
    ),
    "lowercase": ({"type": "lowercase"}, "all quiet here.", "All quiet here."),
    "uppercase": ({"type": "uppercase"}, "ALL QUIET HERE.", "ALL QUIET Here."),
    "end_with": (
        {"type": "end_with", "phrase": "Is there anything else I can help with?"},
        "Drink water often. Is there anything else I can help with?  \n",
        "Is there anything else I can help with? Drink water often.",
    ),
    "start_with": (
        {"type": "start_with", "word": "Imagine"},
        "**Imagine** a quiet lake.",
        "Just imagine a lake.",
    ),
    "no_commas": ({"type": "no_commas"}, "Short and sweet.", "Short, and sweet."),
    "title": ({"type": "title"}, "<<Morning Tea>>\nTea is warm.", "Morning Tea\nTea is warm. <<>>"),
    "paragraphs": (
        {"type": "paragraphs", "n": 2},
        "<<Title>>\n\nFirst part here.\n\n***\n\nSecond part here.\n\nP.S. bye",
        "Only one paragraph here.",
    ),
    "quoted": ({"type": "quoted"}, '  "Tea is warm and calm."\n', 'Tea is "warm" and calm.'),
    "json_format": (
        {"type": "json_format"},
        '```json\n{"tip": "drink tea"}\n```',
        'Here is JSON: {"tip": "drink tea"}',
    ),
    "max_sentences": ({"type": "max_sentences", "n": 2}, "Tea is warm. It calms me!", "One. Two. Three."),
    "placeholders": (
        {"type": "placeholders", "n": 2},
        "Dear [name], meet me at [address].",
        "Dear [name], meet me at home. []",
    ),
    "postscript": (
        {"type": "postscript"},
        "See you soon.\n\nP.S. Bring tea.",
        "See you soon. I wrote P.S. in the middle.",
    ),
}


def test_every_kind_has_examples() -> None:
    assert set(EXAMPLES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_check_passes_and_fails(kind: str) -> None:
    constraint, obeys, breaks = EXAMPLES[kind]
    validate(constraint)
    assert describe(constraint).endswith(".")
    assert check(constraint, obeys), f"{kind} should accept {obeys!r}"
    assert not check(constraint, breaks), f"{kind} should reject {breaks!r}"


def test_unknown_type_lists_known_types() -> None:
    with pytest.raises(ValueError, match="known types: .*max_words"):
        check({"type": "haiku"}, "x")


@pytest.mark.parametrize(
    "constraint, field",
    [
        ({"type": "max_words"}, "'n'"),
        ({"type": "max_words", "n": 0}, "'n'"),
        ({"type": "include_keywords", "words": []}, "'words'"),
        ({"type": "start_with", "word": "two words"}, "'word'"),
        ({"type": "lowercase", "extra": 1}, "extra"),
    ],
)
def test_validate_names_bad_field(constraint: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate(constraint)


def _load_make_prompts():
    spec = importlib.util.spec_from_file_location("make_prompts", ROOT / "scripts" / "make_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompt_set_is_deterministic_distinct_and_consistent() -> None:
    make_prompts = _load_make_prompts()
    rows = make_prompts.build_prompts(2400)
    assert rows == make_prompts.build_prompts(2400)
    assert len({row["prompt"] for row in rows}) == 2400
    assert len({row["id"] for row in rows}) == 2400
    for row in rows:
        assert 1 <= len(row["constraints"]) <= 3
        for constraint in row["constraints"]:
            validate(constraint)
            assert describe(constraint) in row["prompt"]
        for a, b in itertools.combinations(row["constraints"], 2):
            assert not conflicts(a, b), f"{row['id']}: {a} conflicts with {b}"


def test_conflicts_catch_contradictions() -> None:
    assert conflicts({"type": "lowercase"}, {"type": "uppercase"})
    assert conflicts({"type": "bullet_count", "n": 3}, {"type": "json_format"})
    assert conflicts({"type": "quoted"}, {"type": "json_format"})
    assert conflicts({"type": "include_keywords", "words": ["tea"]}, {"type": "exclude_words", "words": ["tea"]})
    assert not conflicts({"type": "max_words", "n": 60}, {"type": "include_keywords", "words": ["tea"]})
