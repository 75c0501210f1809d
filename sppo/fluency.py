"""Degeneracy measures of a reply, each in [0, 1]: looping (repetition) and parroting the prompt (copying).

The rule judge penalises them and evaluate reports how often they occur, whatever judge ran."""

from __future__ import annotations

import numpy as np

from sppo.constraints import words
from sppo.prompts import PromptRecord

# Fractions of duplicated / prompt-copied n-grams that natural prose stays under, and where the full
# measure is reached; in between it ramps linearly.
REPETITION_RAMP = (0.10, 0.40)
COPY_RAMP = (0.25, 0.50)


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _duplicate_fraction(items: list) -> float:
    return 1.0 - len(set(items)) / len(items) if items else 0.0


def _ramp(value: float, ramp: tuple[float, float]) -> float:
    low, high = ramp
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


def repetition(response: str) -> float:
    """Duplicated word 3/4-grams or lines: a reply that loops."""
    tokens = [w.lower() for w in words(response)]
    lines = [line.strip().lower() for line in response.splitlines() if line.strip()]
    ngram_repeats = np.mean([_duplicate_fraction(ngrams(tokens, n)) for n in (3, 4)])
    return _ramp(max(ngram_repeats, _duplicate_fraction(lines)), REPETITION_RAMP)


def copying(prompt: PromptRecord, response: str) -> float:
    """Reply word 3-grams found in the prompt: a reply that parrots it."""
    tokens = [w.lower() for w in words(response)]
    # Required phrases (an end_with phrase) appear in the prompt by construction; repeating them is obeying.
    required = {g for c in prompt.constraints if "phrase" in c for g in ngrams(words(c["phrase"].lower()), 3)}
    prompt_trigrams = set(ngrams([w.lower() for w in words(prompt.prompt)], 3)) - required
    reply_trigrams = ngrams(tokens, 3)
    copied = sum(g in prompt_trigrams for g in reply_trigrams) / len(reply_trigrams) if reply_trigrams else 0.0
    return _ramp(copied, COPY_RAMP)
