"""Judges: K responses to a prompt in, a K x K preference matrix out (see base.Judge). One module per member,
each with its own config; a recipe picks one by `type`.

Adding a judge: a module with `XJudgeConfig(JudgeSettings)` (a `type` Literal, its fields, `build`, and
`engine_shape` if it needs other devices than the recipe's per-worker default) and one entry in JudgeConfig.
Members import their heavy libraries (llm-blender, transformers, vllm) only when built."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from sppo.judges.base import Judge, Judgement, JudgeSettings, sigmoid_matrix
from sppo.judges.llm import LLMJudgeConfig
from sppo.judges.pairrm import PairRMJudgeConfig
from sppo.judges.reward_model import RewardModelJudgeConfig
from sppo.judges.rule import RuleJudgeConfig
from sppo.settings import by_type_name

JudgeConfig = Annotated[
    RuleJudgeConfig | PairRMJudgeConfig | RewardModelJudgeConfig | LLMJudgeConfig,
    Field(discriminator="type"),
    BeforeValidator(by_type_name("rule")),
]

__all__ = [
    "Judge",
    "JudgeConfig",
    "JudgeSettings",
    "Judgement",
    "LLMJudgeConfig",
    "PairRMJudgeConfig",
    "RewardModelJudgeConfig",
    "RuleJudgeConfig",
    "sigmoid_matrix",
]
