"""The judge contract: K responses to one prompt in, a K x K preference matrix out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from pydantic import Field

from sppo.prompts import PromptRecord
from sppo.runner import EngineShape
from sppo.settings import NOT_OUTPUT, Settings


@dataclass(frozen=True)
class Judgement:
    """One prompt's verdict.

    scores: (K,) higher is better; the winner/loser of the training pair are argmax/argmin of it.
    matrix: (K, K) with matrix[i, j] = P(y_i > y_j | x); matrix + matrix.T = 1 and the diagonal is 1/2.
    """

    scores: np.ndarray
    matrix: np.ndarray


class Judge(Protocol):
    name: str

    def judge(self, prompts: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> list[Judgement]:
        """One Judgement per prompt; responses[i] are the K responses to prompts[i]."""
        ...


def sigmoid_matrix(scores: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """P_ij = sigmoid(scale * (s_i - s_j)): the reference-compatible way to turn scores into preferences."""
    diff = scale * (scores[:, None] - scores[None, :])
    return 1.0 / (1.0 + np.exp(-diff))


class JudgeSettings(Settings):
    """Base of the members' configs; `type` (a Literal in each member) picks the member in a recipe."""

    batch_size: int = Field(
        8, ge=1, description="Prompts per judge call (the rank stage's work unit).", json_schema_extra=NOT_OUTPUT
    )

    # Whether the judge runs a model, so that the recipe's precision can change its verdicts.
    uses_precision: ClassVar[bool] = True

    def build(self, precision: str = "fp32") -> Judge:
        """The judge, its model (if any) computing in `precision` (auto | fp32 | bf16; sppo.precision)."""
        raise NotImplementedError

    def precision_used(self, precision: str) -> str | None:
        """What of the recipe's precision enters this judge's fingerprint: nothing for a judge without a model."""
        return precision if self.uses_precision else None

    def check(self, field: str) -> None:
        """Cheap checks before any work (the files it names exist); raises ValueError naming `field`."""

    def engine_shape(self, cpus: float, gpus: float) -> EngineShape:
        """Devices one judge actor takes, given the recipe's per-worker CPUs and GPUs."""
        return EngineShape(cpus=cpus, gpus=gpus)
