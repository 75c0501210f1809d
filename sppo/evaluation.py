"""Head-to-head win rates with 95% intervals, and the response statistics evaluate reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sppo.constraints import check
from sppo.fluency import copying, repetition
from sppo.judges.base import Judge
from sppo.prompts import PromptRecord


def _rate(outcomes: np.ndarray) -> dict[str, float | None]:
    """Win rate and 95% interval; None (never NaN, which is not JSON) when there is nothing to rate."""
    n = len(outcomes)
    if not n:
        return {"win_rate": None, "ci95_low": None, "ci95_high": None, "n": 0}
    rate = float(outcomes.mean())
    half = 1.96 * float(outcomes.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.5
    return {"win_rate": rate, "ci95_low": max(0.0, rate - half), "ci95_high": min(1.0, rate + half), "n": n}


VERDICTS = {1.0: "win", 0.5: "tie", 0.0: "loss"}
OUTCOMES = {name: value for value, name in VERDICTS.items()}
COUNTS = {"wins": 1.0, "ties": 0.5, "losses": 0.0}  # head_to_head's count fields


def head_to_head(judge: Judge, prompts: Sequence[PromptRecord], ours: Sequence[str], theirs: Sequence[str]) -> dict:
    """Win rate of `ours` over `theirs`: a win counts 1, a tie 1/2. The interval is the normal
    approximation over per-prompt outcomes (n is in the hundreds here).

    `by_length` splits the prompts by whether ours is shorter, about as long (within 20%) or longer
    than theirs: a policy that only wins where it is longer is buying wins with length. `verdicts`
    holds each prompt's outcome for ours ("win", "tie" or "loss"), in prompt order."""
    verdicts = judge.judge(prompts, [[a, b] for a, b in zip(ours, theirs, strict=True)])
    outcomes = np.array(
        [1.0 if v.scores[0] > v.scores[1] else 0.5 if v.scores[0] == v.scores[1] else 0.0 for v in verdicts]
    )
    ratio = np.array([(len(a.split()) + 1) / (len(b.split()) + 1) for a, b in zip(ours, theirs, strict=True)])
    buckets = {"shorter": ratio < 1 / 1.2, "similar": (ratio >= 1 / 1.2) & (ratio <= 1.2), "longer": ratio > 1.2}
    return {
        **_rate(outcomes),
        "mean_preference": float(np.mean([v.matrix[0][1] for v in verdicts])),
        **{count: int((outcomes == value).sum()) for count, value in COUNTS.items()},
        "by_length": {name: _rate(outcomes[mask]) for name, mask in buckets.items()},
        "verdicts": [VERDICTS[float(o)] for o in outcomes],
    }


def response_stats(
    prompts: Sequence[PromptRecord], responses: Sequence[str], num_tokens: Sequence[int]
) -> dict[str, float]:
    checked = [[check(c, r) for c in p.constraints] for p, r in zip(prompts, responses, strict=True)]
    with_constraints = [c for c in checked if c]
    return {
        "mean_response_tokens": float(np.mean(num_tokens)),
        "mean_response_words": float(np.mean([len(r.split()) for r in responses])),
        "empty_rate": float(np.mean([not r.strip() for r in responses])),
        # Fluency guards: replies that loop a phrase, or parrot the prompt (the rule judge penalises both).
        "loop_rate": float(np.mean([repetition(r) > 0 for r in responses])),
        "copy_rate": float(np.mean([copying(p, r) > 0 for p, r in zip(prompts, responses, strict=True)])),
        # Share of individual constraints met, and of prompts whose every constraint is met.
        "constraint_pass_rate": float(np.mean([x for c in with_constraints for x in c])) if with_constraints else None,
        "prompt_pass_rate": float(np.mean([all(c) for c in with_constraints])) if with_constraints else None,
    }


def subset_report(
    keep: Sequence[bool],
    prompts: Sequence[PromptRecord],
    verdicts: dict[str, Sequence[str]],
    texts: dict[str, Sequence[str]],
    tokens: dict[str, Sequence[int]],
) -> dict:
    """The evaluation restricted to the prompts where `keep` is true: each head-to-head's win rate with its
    interval (from the verdicts already given, so the judge is asked once) and each model's response stats."""
    idx = [i for i, k in enumerate(keep) if k]
    report: dict = {"prompts": len(idx)}
    for key, given in verdicts.items():
        outcomes = np.array([OUTCOMES[given[i]] for i in idx])
        report[key] = {
            **_rate(outcomes),
            **{count: int((outcomes == value).sum()) for count, value in COUNTS.items()},
        }
    for role in texts:
        report[role] = (
            response_stats([prompts[i] for i in idx], [texts[role][i] for i in idx], [tokens[role][i] for i in idx])
            if idx
            else None
        )
    return report
