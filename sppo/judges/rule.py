"""The offline default judge: scores each response on the prompt's verifiable constraints, a little
substance, and heavy degeneracy penalties, then P_ij = sigmoid(scale * (s_i - s_j)).

score = 1.00 * fraction of constraints passed
      + 0.15 * topic coverage   (the prompt's content words the reply mentions, up to 3)
      + 0.15 * length fit       (words / min(20, 0.4 * max_words), capped at 1)
      - 2.00 * repetition       (duplicated word 3/4-grams or lines: loops)
      - 2.00 * copying          (reply 3-grams found in the prompt: parroting)
      - 1.00 * shortness        (under 5 words)
A reply with no words at all scores EMPTY_SCORE, below any non-empty reply (whose floor is -5).

The penalties outweigh the whole constraint term, so SPPO cannot learn to win by looping a keyword and
the required ending, by echoing the prompt, or by saying nothing (which trivially obeys max_words,
lowercase and no_commas). A prompt without constraints is scored on the substance and degeneracy
terms only: the constraint term is 0 for every reply, so it changes no preference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from sppo.constraints import check, describe, words
from sppo.fluency import copying, repetition
from sppo.judges.base import Judgement, JudgeSettings, sigmoid_matrix
from sppo.prompts import PromptRecord
from sppo.runner import EngineShape

CONSTRAINT_WEIGHT = 1.0
TOPIC_WEIGHT = 0.15
LENGTH_WEIGHT = 0.15
REPETITION_WEIGHT = 2.0
COPY_WEIGHT = 2.0
SHORTNESS_WEIGHT = 1.0
EMPTY_SCORE = -10.0

SHORT_REPLY_WORDS = 5
TOPIC_WORDS_WANTED = 3

# Function words and the instruction verbs of the task templates: mentioning them says nothing about
# whether the reply is on topic.
NON_TOPIC_WORDS = frozenset(
    """
    a about above after again all also an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having
    he her here hers him his how i if in into is it its just me more most my no nor not now of off on
    once only or other our out over own same she should so some such than that the their them then there
    these they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours someone something someone's people person
    answer answers beginner beginner's blog brief child child's common compare curious day describe
    diary different email entry experienced explain friend friends give guide instructions involves
    involving letter list local main memorable might mistakes moment never newspaper opening poem post
    practical question related short simple social media spent step step-by-step story summarize
    teenager thinking tips two using ways write idea behind care analogy dialogue discussing make
    """.split()
)


@dataclass(frozen=True)
class ScoreParts:
    """The terms of one reply's score, each in [0, 1] before weighting."""

    constraints: float
    topic: float
    length: float
    repetition: float
    copying: float
    shortness: float

    @property
    def total(self) -> float:
        return (
            CONSTRAINT_WEIGHT * self.constraints
            + TOPIC_WEIGHT * self.topic
            + LENGTH_WEIGHT * self.length
            - REPETITION_WEIGHT * self.repetition
            - COPY_WEIGHT * self.copying
            - SHORTNESS_WEIGHT * self.shortness
        )


def _stem(word: str) -> str:
    # A crude prefix stem is enough to match "garden"/"gardening" or "tomato"/"tomatoes" for a bonus.
    return word[:5]


def task_text(prompt: PromptRecord) -> str:
    """The prompt without the constraint sentences appended to it."""
    text = prompt.prompt
    for constraint in prompt.constraints:
        text = text.replace(describe(constraint), " ")
    return text


def constraints_passed(prompt: PromptRecord, response: str) -> tuple[int, int]:
    """(passed, total) constraints. A reply with no words passes none: saying nothing follows no
    instruction, even where it technically obeys max_words or lowercase."""
    total = len(prompt.constraints)
    if not words(response):
        return 0, total
    return sum(check(c, response) for c in prompt.constraints), total


def score_parts(prompt: PromptRecord, response: str) -> ScoreParts:
    tokens = [w.lower() for w in words(response)]
    passed, total = constraints_passed(prompt, response)

    content = {_stem(w) for w in map(str.lower, words(task_text(prompt))) if w not in NON_TOPIC_WORDS}
    content |= {
        _stem(w.lower()) for c in prompt.constraints for w in c.get("words", []) if c["type"] != "exclude_words"
    }
    mentioned = content & {_stem(w) for w in tokens}
    topic = min(1.0, len(mentioned) / min(TOPIC_WORDS_WANTED, len(content))) if content else 0.0

    word_limit = min((c["n"] for c in prompt.constraints if c["type"] == "max_words"), default=None)
    enough_words = 20.0 if word_limit is None else min(20.0, 0.4 * word_limit)
    length = min(1.0, len(tokens) / enough_words)

    shortness = max(0.0, 1.0 - len(tokens) / SHORT_REPLY_WORDS)
    return ScoreParts(
        passed / total if total else 0.0,
        topic,
        length,
        repetition(response),
        copying(prompt, response),
        shortness,
    )


def score_response(prompt: PromptRecord, response: str) -> float:
    """The rule judge's score for one reply (see the module docstring for its terms)."""
    if not words(response):
        return EMPTY_SCORE
    return score_parts(prompt, response).total


class RuleJudgeConfig(JudgeSettings):
    type: Literal["rule"] = "rule"
    scale: float = Field(5.0, gt=0.0, description="P_ij = sigmoid(scale * (s_i - s_j)).")

    uses_precision: ClassVar[bool] = False  # plain Python arithmetic

    def build(self, precision: str = "fp32") -> RuleJudge:
        return RuleJudge(scale=self.scale)

    def engine_shape(self, cpus: float, gpus: float) -> EngineShape:
        return EngineShape(cpus=cpus, gpus=0.0)  # plain Python: a GPU would sit idle


class RuleJudge:
    """Deterministic, offline judge over the prompts' verifiable constraints."""

    name = "rule"

    def __init__(self, scale: float = 5.0) -> None:
        if scale <= 0:
            raise ValueError(f"RuleJudge scale must be positive (judge.scale), got {scale}")
        self.scale = scale

    def judge(self, prompts: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> list[Judgement]:
        if len(prompts) != len(responses):
            raise ValueError(f"RuleJudge got {len(prompts)} prompts but {len(responses)} response lists")
        judgements = []
        for prompt, replies in zip(prompts, responses, strict=True):
            scores = np.array([score_response(prompt, reply) for reply in replies], dtype=np.float64)
            judgements.append(Judgement(scores=scores, matrix=sigmoid_matrix(scores, self.scale)))
        return judgements
