"""A reward model as a Judge: any transformers `AutoModelForSequenceClassification` (ArmoRM-, Skywork-style)
scores each response alone, r_i = RM([user: prompt, assistant: response]) in the reward model's own chat
template, and P_ij = sigmoid(r_i - r_j); the scores are the rewards r.

A head with several outputs (num_labels > 1) is read at `output_index` (default 0, the first). Models whose
remote code returns the reward in another output field (ArmoRM's `score`) name it in `output_field`.
Sequences are batched `batch_size` per forward, right-padded with the model's pad token id, which is how
sequence-classification heads find their last real token (Llama-style ones take the last non-pad token).
Weights are fp32, on the GPU when this process has one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from sppo.judges.base import Judgement, JudgeSettings, sigmoid_matrix
from sppo.precision import resolve_precision
from sppo.prompts import PromptRecord
from sppo.settings import NOT_OUTPUT
from sppo.sources import looks_like_path

log = logging.getLogger(__name__)


class RewardModelJudgeConfig(JudgeSettings):
    type: Literal["reward_model"] = "reward_model"
    model: str = Field(description="The reward model: a local folder or an HF hub id (a sequence-classification head).")
    batch_size: int = Field(
        8,
        ge=1,
        description="Sequences (prompt + one response) per forward pass; the rank stage also hands the judge this "
        "many prompts per call.",
        json_schema_extra=NOT_OUTPUT,
    )
    output_index: int = Field(0, ge=0, description="The reward's column in a head with several outputs (num_labels).")
    output_field: str = Field(
        "logits",
        description="The model output holding the rewards: 'logits' for transformers heads, 'score' for ArmoRM.",
    )
    trust_remote_code: bool = Field(False, description="Allow the model's own code from the hub; off for safety.")

    def build(self, precision: str = "fp32") -> RewardModelJudge:
        return RewardModelJudge(
            self.model, self.batch_size, self.output_index, self.output_field, self.trust_remote_code, precision
        )

    def check(self, field: str) -> None:
        path = Path(self.model).expanduser()
        if looks_like_path(self.model) and not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise ValueError(f"{field}.model: {self.model} {what}; give a reward model folder or an HF hub id")


class RewardModelJudge:
    name = "reward_model"

    def __init__(
        self,
        model: str,
        batch_size: int = 8,
        output_index: int = 0,
        output_field: str = "logits",
        trust_remote_code: bool = False,
        precision: str = "fp32",
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"reward model {model} has no chat template, so there is no telling how it reads a prompt and a "
                "response: use a chat reward model or add `chat_template` to its tokenizer_config.json"
            )
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model, dtype=resolve_precision(precision).torch_dtype, trust_remote_code=trust_remote_code
        )
        self.model.eval()
        if torch.cuda.is_available():
            self.model.to("cuda")
        labels = getattr(self.model.config, "num_labels", 1)
        if output_index >= labels:
            raise ValueError(f"judge.output_index is {output_index} but reward model {model} has {labels} output(s)")
        self.pad_id = getattr(self.model.config, "pad_token_id", None)
        if self.pad_id is None and batch_size > 1:
            # Without a pad id the head reads the very last token, so a padded batch would read padding.
            log.warning("reward model %s sets no pad_token_id in its config: scoring one sequence per forward", model)
            batch_size = 1
        self.batch_size = batch_size
        self.output_index = output_index
        self.output_field = output_field
        self.max_tokens = getattr(self.model.config, "max_position_embeddings", None)
        self.source = model

    def judge(self, prompts: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> list[Judgement]:
        if len(prompts) != len(responses):
            raise ValueError(f"RewardModelJudge got {len(prompts)} prompts but {len(responses)} response lists")
        sequences = [self._encode(p, r) for p, rs in zip(prompts, responses, strict=True) for r in rs]
        rewards = self.rewards(sequences)
        judgements, start = [], 0
        for rs in responses:
            r = rewards[start : start + len(rs)]
            start += len(rs)
            judgements.append(Judgement(scores=r, matrix=sigmoid_matrix(r)))
        return judgements

    def _encode(self, prompt: PromptRecord, response: str) -> list[int]:
        chat = [{"role": "user", "content": prompt.prompt}, {"role": "assistant", "content": response}]
        ids = list(self.tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False))
        if self.max_tokens and len(ids) > self.max_tokens:
            raise ValueError(
                f"reward model {self.source}: prompt {prompt.id!r} with a response is {len(ids)} tokens, beyond the "
                f"model's {self.max_tokens}; shorten generate.max_new_tokens or generate.max_prompt_tokens"
            )
        return ids

    def rewards(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """The reward of each token sequence (float64), `batch_size` per forward, longest first."""
        import torch

        out = np.empty(len(sequences))
        order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
        device = self.model.device
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                width = max(len(sequences[r]) for r in rows)
                # Right padding: real tokens keep positions 0..n-1 whatever the batch (absolute-position models).
                ids = [list(sequences[r]) + [self.pad_id] * (width - len(sequences[r])) for r in rows]
                mask = [[1] * len(sequences[r]) + [0] * (width - len(sequences[r])) for r in rows]
                output = self.model(
                    input_ids=torch.tensor(ids, device=device), attention_mask=torch.tensor(mask, device=device)
                )
                values = getattr(output, self.output_field).float().reshape(len(rows), -1)
                out[rows] = values[:, self.output_index].double().cpu().numpy()
        return out
