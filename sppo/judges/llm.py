"""A local instruct model as a pairwise Judge ("LLM as a judge"), both orders so position bias cancels.

For every ordered pair (i, j), i != j, the judge model reads `template` filled with the instruction,
response A = y_i and response B = y_j, in its chat template as the user turn, and we read the probabilities
of its two verdict tokens as the first token of its answer, normalised over the two:

    p_AB(i, j) = P(A) / (P(A) + P(B))                      (y_i shown first wins)
    P_ij       = (p_AB(i, j) + 1 - p_AB(j, i)) / 2,  P_ji = 1 - P_ij,  P_ii = 1/2
    scores     = row means of P (the win rates)

K responses cost K (K - 1) judge prompts. The model runs in a generation engine (`engine`: HF or vLLM), which
gives exact next-token log-probabilities (sppo.generation.Generator.next_token_logprobs).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from sppo.generation import EngineRequest, Generator, chat_prompt_ids
from sppo.generators import GeneratorConfig, HFGeneratorConfig
from sppo.judges.base import Judgement, JudgeSettings
from sppo.prompts import PromptRecord
from sppo.runner import EngineShape
from sppo.settings import NOT_OUTPUT
from sppo.sources import looks_like_path

TEMPLATE = """Which response follows the instruction better? Judge helpfulness, correctness and whether every \
requirement of the instruction is met; ignore the order of the responses and do not prefer longer ones.

[Instruction]
{instruction}

[Response A]
{response_a}

[Response B]
{response_b}

Answer with A or B."""


class LLMJudgeConfig(JudgeSettings):
    type: Literal["llm"] = "llm"
    model: str = Field(description="The judge model: an instruct model's local folder or HF hub id.")
    engine: GeneratorConfig = Field(
        HFGeneratorConfig(), description="The engine running the judge model, by `type` ('hf' or 'vllm')."
    )
    batch_size: int = Field(
        8,
        ge=1,
        description="Judge prompts per forward pass (sequences per engine call); the rank stage also hands the judge "
        "this many prompts per call, each giving K (K - 1) judge prompts.",
        json_schema_extra=NOT_OUTPUT,
    )
    template: str = Field(
        TEMPLATE, description="The user turn: a str.format template with {instruction}, {response_a}, {response_b}."
    )
    verdicts: tuple[str, str] = Field(
        ("A", "B"), description="The words for 'A wins' and 'B wins'; each must be one token of the judge model."
    )
    max_prompt_tokens: int = Field(
        2048, ge=16, description="Longest judge prompt (template, instruction and both responses) allowed."
    )
    trust_remote_code: bool = Field(False, description="Allow the model's own code from the hub; off for safety.")

    @field_validator("template")
    @classmethod
    def _fills(cls, template: str) -> str:
        try:
            template.format(instruction="", response_a="", response_b="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"the template must use exactly {{instruction}}, {{response_a}} and {{response_b}} (double other "
                f"braces): {err!r}"
            ) from None
        missing = [k for k in ("{instruction}", "{response_a}", "{response_b}") if k not in template]
        if missing:
            raise ValueError(f"the template lacks {', '.join(missing)}")
        return template

    def build(self, precision: str = "fp32") -> LLMJudge:
        request = EngineRequest(
            model_dir=_local_folder(self.model),
            batch_size=self.batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
            max_new_tokens=1,
            precision=precision,
            trust_remote_code=self.trust_remote_code,
        )
        engine = self.engine.build(request)
        return LLMJudge(engine, self.template, self.verdicts, self.max_prompt_tokens)

    def check(self, field: str) -> None:
        path = Path(self.model).expanduser()
        if looks_like_path(self.model) and not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise ValueError(f"{field}.model: {self.model} {what}; give an instruct model folder or an HF hub id")

    def engine_shape(self, cpus: float, gpus: float) -> EngineShape:
        return self.engine.engine_shape(cpus, gpus)  # a tensor-parallel vLLM judge spans its GPUs


def _local_folder(model: str) -> str:
    """The HF engine loads folders only: a hub id is fetched into the HF cache first (vLLM would do the same)."""
    if Path(model).expanduser().exists() or looks_like_path(model):
        return str(Path(model).expanduser())
    from huggingface_hub import snapshot_download

    return snapshot_download(model)


class LLMJudge:
    name = "llm"

    def __init__(self, engine: Generator, template: str, verdicts: tuple[str, str], max_prompt_tokens: int):
        self.engine = engine
        self.template = template
        self.max_prompt_tokens = max_prompt_tokens
        ids = [engine.tokenizer.encode(word, add_special_tokens=False) for word in verdicts]
        for word, tokens in zip(verdicts, ids, strict=True):
            if len(tokens) != 1:
                pieces = engine.tokenizer.convert_ids_to_tokens(tokens)
                raise ValueError(
                    f"judge.verdicts: {word!r} is {len(tokens)} tokens {pieces} in the judge model's tokenizer; "
                    "each verdict must be one token (e.g. 'A' and 'B', or '1' and '2')"
                )
        if ids[0] == ids[1]:
            raise ValueError(f"judge.verdicts: {verdicts[0]!r} and {verdicts[1]!r} are the same token")
        self.verdict_ids = [ids[0][0], ids[1][0]]

    def close(self) -> None:
        self.engine.close()

    def judge_prompt_ids(self, prompt: PromptRecord, first: str, second: str) -> list[int]:
        """The judge's input for 'is `first` (shown as A) better than `second` (B)?', ready for its answer."""
        text = self.template.format(instruction=prompt.prompt, response_a=first, response_b=second)
        ids = chat_prompt_ids(self.engine.tokenizer, text)
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(
                f"llm judge: a judge prompt for prompt {prompt.id!r} is {len(ids)} tokens, over "
                f"judge.max_prompt_tokens={self.max_prompt_tokens}; raise it (within the judge model's context)"
            )
        return ids

    def first_wins(self, prompt_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """p_AB for each judge prompt: P(A) / (P(A) + P(B)) = sigmoid(log P(A) - log P(B))."""
        logprobs = self.engine.next_token_logprobs(prompt_ids, self.verdict_ids)
        return 0.5 * (1.0 + np.tanh(0.5 * (logprobs[:, 0] - logprobs[:, 1])))  # sigmoid without overflow

    def judge(self, prompts: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> list[Judgement]:
        if len(prompts) != len(responses):
            raise ValueError(f"LLMJudge got {len(prompts)} prompts but {len(responses)} response lists")
        pairs = [(p, i, j) for p, rs in enumerate(responses) for i, j in itertools.permutations(range(len(rs)), 2)]
        ids = [self.judge_prompt_ids(prompts[p], responses[p][i], responses[p][j]) for p, i, j in pairs]
        first = dict(zip(pairs, self.first_wins(ids) if ids else [], strict=True))
        judgements = []
        for p, rs in enumerate(responses):
            m = np.full((len(rs), len(rs)), 0.5)
            for i, j in itertools.combinations(range(len(rs)), 2):
                m[i, j] = (first[p, i, j] + 1.0 - first[p, j, i]) / 2
                m[j, i] = 1.0 - m[i, j]
            judgements.append(Judgement(scores=m.mean(axis=1), matrix=m))
        return judgements
