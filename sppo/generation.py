"""Sampling K responses per prompt from a policy.

Batches are planned from the whole prompt list (length-sorted, fixed size) and each batch draws from
its own seed, so a response depends only on the recipe and its prompt's batch: the same seeds give the
same responses however the batches are later spread over workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from sppo.models import load_policy


@dataclass(frozen=True)
class Sampling:
    num_samples: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finished: bool  # ended with the end-of-turn token rather than the length limit


class Generator(Protocol):
    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
        """For each user prompt, sampling.num_samples completions, in prompt order."""
        ...


@dataclass(frozen=True)
class Batch:
    index: int
    prompt_indices: tuple[int, ...]


def plan_batches(prompt_lengths: Sequence[int], prompts_per_batch: int) -> list[Batch]:
    """Longest prompts first (padding waste is smallest among similar lengths); ties by position."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: (-prompt_lengths[i], i))
    return [
        Batch(index=n, prompt_indices=tuple(order[start : start + prompts_per_batch]))
        for n, start in enumerate(range(0, len(order), prompts_per_batch))
    ]


def batch_seed(base_seed: int, batch: Batch) -> int:
    return (base_seed * 1_000_003 + batch.index) % (2**63)


class HFGenerator:
    """transformers generate() on CPU or one GPU: left-padded, length-sorted batches."""

    def __init__(
        self,
        model_dir: str | Path,
        batch_size: int,
        max_prompt_tokens: int,
        trust_remote_code: bool = False,
        progress: bool = True,
    ):
        self.model, self.tokenizer = load_policy(model_dir, trust_remote_code=trust_remote_code)
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.progress = progress

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        return list(ids)[-self.max_prompt_tokens :]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
        encoded = [self.encode(p) for p in prompts]
        per_batch = max(1, self.batch_size // sampling.num_samples)
        results: list[list[Completion]] = [[] for _ in prompts]
        eos_id = self.tokenizer.eos_token_id
        pad_id = self.tokenizer.pad_token_id
        batches = plan_batches([len(e) for e in encoded], per_batch)
        for batch in tqdm(batches, desc="generate", unit="batch", disable=not self.progress):
            rows = [encoded[i] for i in batch.prompt_indices]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
            attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            torch.manual_seed(batch_seed(sampling.seed, batch))
            sample = sampling.temperature > 0
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=None,
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=sampling.num_samples,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
            )
            new_tokens = out[:, width:].tolist()
            for row, tokens in enumerate(new_tokens):
                finished = eos_id in tokens
                tokens = tokens[: tokens.index(eos_id)] if finished else tokens
                text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                prompt_index = batch.prompt_indices[row // sampling.num_samples]
                results[prompt_index].append(Completion(text=text, num_tokens=len(tokens), finished=finished))
        return results
