"""Sampling K responses per prompt from a policy.

Batches are planned from the whole prompt list (length-sorted, fixed size) and each batch draws from
its own seed, so a response depends only on the recipe and its prompt's batch: the same seeds give the
same responses however the batches are later spread over workers."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Sampling:
    num_samples: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    # Also return each completion's token ids and its log-probability under the policy (see Completion).
    logprobs: bool = False


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finished: bool  # ended with the end-of-turn token rather than the length limit
    # With Sampling.logprobs: the sampled tokens (end-of-turn excluded), and log pi(tokens + end-of-turn |
    # prompt) under the generating policy at temperature 1 (raw logits): what training takes as pi_ref's
    # log-probability of the response, which it trains as tokens + end-of-turn also when the length limit
    # cut it. For a cut response the engine runs one step past the limit to read the end-of-turn's
    # probability there; that step's sample is discarded.
    token_ids: tuple[int, ...] = ()
    logprob: float | None = None


def sequence_logprob(tokens: Sequence[int], token_logprobs: Sequence[float], eos_logprobs: Sequence[float],
                     stop_ids: Collection[int], max_new_tokens: int) -> tuple[list[int], float, bool]:  # fmt: skip
    """(response tokens, log pi(response + end-of-turn), finished) from a run of up to max_new_tokens + 1 steps.

    tokens[i] was sampled at step i with log-probability token_logprobs[i]; eos_logprobs[i] is the
    end-of-turn's log-probability at step i. A response that ended by itself within max_new_tokens (on any of
    `stop_ids`: the end of turn, or another EOS id of the model's generation config) is finished; one cut at
    the limit is not. Either way its log-probability is that of its tokens followed by the end-of-turn, which
    is what training trains (the end-of-turn's probability where the response stopped or was cut)."""
    n = next((i for i, t in enumerate(tokens[:max_new_tokens]) if t in stop_ids), None)
    finished = n is not None
    n = n if finished else max_new_tokens
    if n >= len(eos_logprobs):
        raise ValueError(
            f"the engine stopped after {len(tokens)} of {max_new_tokens} tokens on a token outside the stop ids "
            f"{sorted(stop_ids)}; every engine must stop on the same ids (sppo.generation.stop_token_ids)"
        )
    return list(tokens[:n]), float(sum(token_logprobs[:n]) + eos_logprobs[n]), finished


def stop_token_ids(tokenizer, model_dir: str | Path) -> frozenset[int]:
    """What ends an answer, the same for every engine: the tokenizer's end of turn and every EOS id the model's
    generation config lists (Llama 3's lists <|end_of_text|> and <|eot_id|>; vLLM stops on them all)."""
    ids = {tokenizer.eos_token_id}
    try:
        config = json.loads((Path(model_dir) / "generation_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    listed = config.get("eos_token_id")
    ids.update(listed if isinstance(listed, list) else [listed] if isinstance(listed, int) else [])
    return frozenset(i for i in ids if isinstance(i, int))


def check_completions(completions: Sequence[Sequence[Completion]], sampling: Sampling, engine: str) -> None:
    """Raise unless every completion carries what `sampling` asked for: with logprobs, its token ids (one per
    counted token) and its log-probability. An engine that ignored the request would otherwise leave empty
    token ids, and training would train on the end-of-turn alone."""
    if not sampling.logprobs:
        return
    for index, per_prompt in enumerate(completions):
        for c in per_prompt:
            if c.logprob is None or len(c.token_ids) != c.num_tokens:
                raise RuntimeError(
                    f"generate.engine {engine!r} returned prompt {index}'s completion without the log-probabilities "
                    f"and token ids it was asked for ({c.num_tokens} tokens, {len(c.token_ids)} ids, logprob "
                    f"{c.logprob}); the engine must record them (Sampling.logprobs)"
                )


@dataclass(frozen=True)
class EngineRequest:
    """Everything an engine is built from, decided once by its caller and handed whole to `build(request)`.

    `batch_size` and `max_prompt_tokens` bound the largest call the engine will serve (an engine sizes its
    caches to them); `precision` is the recipe's setting (auto | fp32 | bf16), resolved by the engine on the
    machine it runs on (sppo.precision)."""

    model_dir: str
    batch_size: int  # sequences per engine call
    max_prompt_tokens: int  # prompts are left-truncated to this many tokens
    max_new_tokens: int
    precision: str = "fp32"
    threads: int | None = None
    trust_remote_code: bool = False


class Generator(Protocol):
    """A generation engine serving one policy snapshot (sppo.generators holds the members)."""

    tokenizer: Any  # the policy's tokenizer, with its chat template
    batch_size: int  # sequences per engine call
    max_prompt_tokens: int  # prompts are left-truncated to this many tokens

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
        """For each user prompt, sampling.num_samples completions, in prompt order."""
        ...

    def generate_batches(self, batches: Sequence[Batch], sampling: Sampling) -> list[list[list[Completion]]]:
        """For each planned batch (in any order or subset), for each of its prompts, the completions."""
        ...

    def next_token_logprobs(self, prompt_token_ids: Sequence[Sequence[int]], candidates: Sequence[int]) -> np.ndarray:
        """(N, len(candidates)) float64: log P(candidate | prompt) over the whole vocabulary, from the raw logits
        (no temperature), for each prompt given as token ids (used whole, never truncated). What an LLM judge
        reads its verdict from."""
        ...

    def close(self) -> None:
        """Free the engine's memory now (model, KV cache), not whenever the garbage collector gets to it:
        a stage builds engines one after another in one process, and each may need most of the memory."""
        ...


@dataclass(frozen=True)
class Batch:
    """One unit of generation work: it carries its prompts' token ids, so any worker can run it."""

    index: int
    prompt_indices: tuple[int, ...]
    input_ids: tuple[tuple[int, ...], ...]


def plan_batches(encoded: Sequence[Sequence[int]], prompts_per_batch: int) -> list[Batch]:
    """Longest prompts first (padding waste is smallest among similar lengths); ties by position."""
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    batches = []
    for n, start in enumerate(range(0, len(order), prompts_per_batch)):
        indices = tuple(order[start : start + prompts_per_batch])
        batches.append(Batch(index=n, prompt_indices=indices, input_ids=tuple(tuple(encoded[i]) for i in indices)))
    return batches


def batch_seed(base_seed: int, batch: Batch) -> int:
    return (base_seed * 1_000_003 + batch.index) % (2**63)


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The user prompt in the model's chat template, ready for the assistant's turn."""
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )


def chat_prompt_text(tokenizer, prompt: str) -> str:
    """The user prompt in the model's chat template as text, up to where the assistant's turn begins."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )


def encode_prompt(tokenizer, prompt: str, max_prompt_tokens: int) -> list[int]:
    return chat_prompt_ids(tokenizer, prompt)[-max_prompt_tokens:]


def count_truncated(tokenizer, prompts: Sequence[str], max_prompt_tokens: int) -> int:
    """How many prompts encode_prompt cuts (their chat-formatted length exceeds max_prompt_tokens)."""
    return sum(len(chat_prompt_ids(tokenizer, p)) > max_prompt_tokens for p in prompts)


def plan_generation(
    tokenizer, prompts: Sequence[str], batch_size: int, max_prompt_tokens: int, num_samples: int
) -> list[Batch]:
    """The batches that sample every prompt; needs only the tokenizer, so a driver can plan for remote workers."""
    encoded = [encode_prompt(tokenizer, p, max_prompt_tokens) for p in prompts]
    return plan_batches(encoded, max(1, batch_size // num_samples))


def completions_in_prompt_order(
    batches: Sequence[Batch], per_batch: Sequence[Sequence[list[Completion]]], num_prompts: int
) -> list[list[Completion]]:
    """Merge generate_batches' results (any subset order, one entry per batch) back into prompt order."""
    results: list[list[Completion] | None] = [None] * num_prompts
    for batch, completions in zip(batches, per_batch, strict=True):
        for prompt_index, cs in zip(batch.prompt_indices, completions, strict=True):
            results[prompt_index] = cs
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no completions for prompts {missing[:5]}: the batches do not cover every prompt")
    return results  # type: ignore[return-value]


def generate_all(engine, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
    """Plan the batches for `prompts`, run them on `engine` (its generate_batches) and merge in prompt order."""
    k = sampling.num_samples
    batches = plan_generation(engine.tokenizer, prompts, engine.batch_size, engine.max_prompt_tokens, k)
    return completions_in_prompt_order(batches, engine.generate_batches(batches, sampling), len(prompts))
