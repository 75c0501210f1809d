"""Verifiable instructions in the style of IFEval: each constraint is a JSON-able dict such as
{"type": "max_words", "n": 60}; `describe` turns it into the sentence appended to a prompt and `check`
decides whether a response obeys it.

Checks are strict but fair: surrounding whitespace is ignored, keywords match case-insensitively on
word boundaries (a plural "s"/"es" also counts), and a ```json fence around JSON is accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Constraint = Mapping[str, Any]

WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
BULLET_RE = re.compile(r"^\s*[-*]\s+\S", re.MULTILINE)
TITLE_RE = re.compile(r"<<[^<>\n]*\S[^<>\n]*>>")
PLACEHOLDER_RE = re.compile(r"\[[^\[\]\n]*\S[^\[\]\n]*\]")
# A blank line or a markdown divider (***) both end a paragraph.
PARAGRAPH_SPLIT_RE = re.compile(r"\n\s*\*\*\*\s*\n|\n\s*\n")
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
POSTSCRIPT_RE = re.compile(r"^\s*p\.\s?s\.", re.IGNORECASE | re.MULTILINE)
JSON_FENCE_RE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


def words(text: str) -> list[str]:
    """The words of `text` as the length constraints count them (contractions and hyphenations are one)."""
    return WORD_RE.findall(text)


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}(?:s|es)?\b", text, re.IGNORECASE) is not None


def _quote_list(items: list[str], joiner: str) -> str:
    quoted = [f'"{item}"' for item in items]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {joiner} {quoted[-1]}"


def _paragraphs(text: str) -> list[str]:
    chunks = [chunk.strip() for chunk in PARAGRAPH_SPLIT_RE.split(text.strip())]
    # A title line or a postscript is not one of the paragraphs the instruction asked for.
    return [c for c in chunks if c and not TITLE_RE.fullmatch(c) and not POSTSCRIPT_RE.match(c)]


def _sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_SPLIT_RE.split(text.strip()) if WORD_RE.search(s)]


def _first_word(text: str) -> str:
    found = WORD_RE.search(text.strip())
    return found.group(0) if found else ""


def _is_json(text: str) -> bool:
    body = text.strip()
    fenced = JSON_FENCE_RE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    # A bare number or string is valid JSON but not what "format your answer as JSON" asks for.
    return isinstance(parsed, dict | list)


def _is_quoted(text: str) -> bool:
    body = text.strip()
    return len(body) >= 2 and body[0] in '"“' and body[-1] in '"”'


def _has_postscript(text: str) -> bool:
    marks = list(POSTSCRIPT_RE.finditer(text))
    return bool(marks) and bool(WORD_RE.search(text[marks[-1].end() :]))


@dataclass(frozen=True)
class ConstraintKind:
    """One constraint type: its parameters (name -> "int" | "words" | "text" | "word"), its instruction
    sentence and its checker."""

    name: str
    params: dict[str, str]
    describe: Callable[[Constraint], str]
    check: Callable[[Constraint, str], bool]


KINDS: dict[str, ConstraintKind] = {
    kind.name: kind
    for kind in [
        ConstraintKind(
            "max_words",
            {"n": "int"},
            lambda c: f"Answer with at most {c['n']} words.",
            lambda c, r: len(words(r)) <= c["n"],
        ),
        ConstraintKind(
            "min_words",
            {"n": "int"},
            lambda c: f"Answer with at least {c['n']} words.",
            lambda c, r: len(words(r)) >= c["n"],
        ),
        ConstraintKind(
            "include_keywords",
            {"words": "words"},
            lambda c: (
                f"Include the {'keyword' if len(c['words']) == 1 else 'keywords'} "
                f"{_quote_list(c['words'], 'and')} in your response."
            ),
            lambda c, r: all(_mentions(r, w) for w in c["words"]),
        ),
        ConstraintKind(
            "exclude_words",
            {"words": "words"},
            lambda c: (
                f"Do not use the {'word' if len(c['words']) == 1 else 'words'} "
                f"{_quote_list(c['words'], 'or')} anywhere in your response."
            ),
            lambda c, r: not any(_mentions(r, w) for w in c["words"]),
        ),
        ConstraintKind(
            "bullet_count",
            {"n": "int"},
            lambda c: (
                f"Your answer must contain exactly {c['n']} bullet points, each on its own line starting with '- '."
            ),
            lambda c, r: len(BULLET_RE.findall(r)) == c["n"],
        ),
        ConstraintKind(
            "lowercase",
            {},
            lambda c: "Your entire response must be in lowercase letters; no capital letters are allowed.",
            lambda c, r: r == r.lower(),
        ),
        ConstraintKind(
            "uppercase",
            {},
            lambda c: "Your entire response must be in English and in capital letters only.",
            lambda c, r: r == r.upper(),
        ),
        ConstraintKind(
            "end_with",
            {"phrase": "text"},
            lambda c: f'End your response with the exact phrase "{c["phrase"]}" and write nothing after it.',
            lambda c, r: r.strip().lower().endswith(c["phrase"].strip().lower()),
        ),
        ConstraintKind(
            "start_with",
            {"word": "word"},
            lambda c: f'Start your response with the word "{c["word"]}".',
            lambda c, r: _first_word(r).lower() == c["word"].lower(),
        ),
        ConstraintKind(
            "no_commas",
            {},
            lambda c: "Do not use any commas in your response.",
            lambda c, r: "," not in r and "，" not in r,
        ),
        ConstraintKind(
            "title",
            {},
            lambda c: "Give your answer a title wrapped in double angular brackets, such as <<my title>>.",
            lambda c, r: TITLE_RE.search(r) is not None,
        ),
        ConstraintKind(
            "paragraphs",
            {"n": "int"},
            lambda c: f"Write exactly {c['n']} paragraphs, separated from each other by a blank line.",
            lambda c, r: len(_paragraphs(r)) == c["n"],
        ),
        ConstraintKind(
            "quoted",
            {},
            lambda c: "Wrap your entire response in double quotation marks.",
            lambda c, r: _is_quoted(r),
        ),
        ConstraintKind(
            "json_format",
            {},
            lambda c: "Format your entire output as a JSON object.",
            lambda c, r: _is_json(r),
        ),
        ConstraintKind(
            "max_sentences",
            {"n": "int"},
            lambda c: f"Use no more than {c['n']} sentences.",
            lambda c, r: len(_sentences(r)) <= c["n"],
        ),
        ConstraintKind(
            "placeholders",
            {"n": "int"},
            lambda c: (
                f"Include at least {c['n']} {'placeholder' if c['n'] == 1 else 'placeholders'} "
                "in square brackets, such as [name]."
            ),
            lambda c, r: len(PLACEHOLDER_RE.findall(r)) >= c["n"],
        ),
        ConstraintKind(
            "postscript",
            {},
            lambda c: "At the end of your response, add a postscript starting with P.S.",
            lambda c, r: _has_postscript(r),
        ),
    ]
}

# Pairs no single reply can (or would sensibly) satisfy together; prompt builders must avoid them.
_FORMAT_ONLY_WITH_JSON = {"max_words", "min_words", "include_keywords", "exclude_words", "lowercase"}
CONFLICTING_TYPES: frozenset[frozenset[str]] = frozenset(
    {frozenset({"json_format", other}) for other in KINDS if other not in _FORMAT_ONLY_WITH_JSON | {"json_format"}}
    | {
        frozenset(pair)
        for pair in [
            ("lowercase", "uppercase"),
            ("max_words", "min_words"),
            # The phrase and "P.S." carry capitals: adding all-lowercase reads as a contradiction.
            ("lowercase", "end_with"),
            ("lowercase", "postscript"),
            ("end_with", "postscript"),
            ("end_with", "quoted"),
            ("start_with", "quoted"),
            ("postscript", "quoted"),
            ("bullet_count", "quoted"),
            ("start_with", "title"),
            ("start_with", "bullet_count"),
            ("max_sentences", "bullet_count"),
            ("max_sentences", "paragraphs"),
            ("max_sentences", "postscript"),
            ("max_sentences", "min_words"),
        ]
    }
)


PARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "words": (
        lambda v: isinstance(v, list) and bool(v) and all(isinstance(w, str) and words(w) == [w] for w in v),
        "a non-empty list of single words",
    ),
    "text": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "word": (lambda v: isinstance(v, str) and words(v) == [v], "a single word"),
}


def known_types() -> list[str]:
    return sorted(KINDS)


def _kind(constraint: Constraint) -> ConstraintKind:
    if not isinstance(constraint, Mapping) or "type" not in constraint:
        raise ValueError(f"constraint {constraint!r} must be a dict with a 'type' key; known types: {known_types()}")
    kind = KINDS.get(constraint["type"])
    if kind is None:
        raise ValueError(f"unknown constraint type {constraint['type']!r}; known types: {', '.join(known_types())}")
    return kind


def validate(constraint: Constraint) -> None:
    """Raise ValueError naming the bad field when `constraint` is not a well-formed constraint."""
    kind = _kind(constraint)
    extra = set(constraint) - set(kind.params) - {"type"}
    if extra:
        raise ValueError(f"constraint {kind.name}: unexpected field(s) {sorted(extra)}; expected {sorted(kind.params)}")
    for field, expected in kind.params.items():
        if field not in constraint:
            raise ValueError(f"constraint {kind.name}: missing field {field!r}")
        is_valid, meaning = PARAM_RULES[expected]
        if not is_valid(constraint[field]):
            raise ValueError(f"constraint {kind.name}: field {field!r} must be {meaning}, got {constraint[field]!r}")


def describe(constraint: Constraint) -> str:
    """The English instruction for `constraint`, as appended to a prompt."""
    return _kind(constraint).describe(constraint)


def check(constraint: Constraint, response: str) -> bool:
    """Whether `response` obeys `constraint`."""
    return bool(_kind(constraint).check(constraint, response))


def conflicts(a: Constraint, b: Constraint) -> bool:
    """Whether two constraints cannot sensibly appear in one prompt (same type, a contradictory type pair,
    or parameters that fight, e.g. a keyword both required and forbidden)."""
    types = frozenset({a["type"], b["type"]})
    if len(types) == 1 or types in CONFLICTING_TYPES:
        return True
    forbidden = next((c["words"] for c in (a, b) if c["type"] == "exclude_words"), [])
    other = b if a["type"] == "exclude_words" else a
    required_text = " ".join(other.get("words", [])) + " " + other.get("phrase", "") + " " + other.get("word", "")
    if any(_mentions(required_text, w) for w in forbidden):
        return True
    phrase = next((c["phrase"] for c in (a, b) if c["type"] == "end_with"), "")
    return "no_commas" in types and "," in phrase
