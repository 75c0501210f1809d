"""Prompts from data/prompts.jsonl and stand-in responses of realistic length, the same every run."""

from __future__ import annotations

import random

from bench.context import PROMPTS
from sppo.prompts import PromptRecord, load_prompts


def bench_prompts(count: int) -> list[PromptRecord]:
    """The first `count` prompts of the project's prompt file."""
    return load_prompts(str(PROMPTS))[:count]


def responses(count: int, words: tuple[int, int], seed: int) -> list[str]:
    """`count` texts of `words` (low, high) words each, cut from the tail of the prompt file (real English, never
    the prompts benchmarked, which come from its head): what a response costs a tokenizer and a model."""
    pool = " ".join(r.prompt for r in load_prompts(str(PROMPTS))[-500:]).split()
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(*words)
        start = rng.randrange(len(pool) - n)
        out.append(" ".join(pool[start : start + n]))
    return out
