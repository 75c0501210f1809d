"""transformers generate() as a generation engine: CPU or one GPU, left-padded length-sorted batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from sppo.generation import (
    Batch,
    Completion,
    EngineRequest,
    Sampling,
    batch_seed,
    generate_all,
    sequence_logprob,
    stop_token_ids,
)
from sppo.generators.base import GeneratorSettings

# torch and transformers are imported when an engine is built, not when a recipe naming it is loaded.
log = logging.getLogger(__name__)


class HFGeneratorConfig(GeneratorSettings):
    type: Literal["hf"] = "hf"

    def build(self, request: EngineRequest) -> HFGenerator:
        return HFGenerator(request)


class HFGenerator:
    """transformers generate() on CPU or one GPU: left-padded, length-sorted batches."""

    def __init__(self, request: EngineRequest, progress: bool = True):
        import torch

        from sppo.models import configure_torch, load_policy
        from sppo.precision import resolve_precision

        configure_torch(request.threads)
        precision = resolve_precision(request.precision)
        log.info("hf engine: %s (%s)", precision.name, precision.reason)
        self.model, self.tokenizer = load_policy(
            request.model_dir, trust_remote_code=request.trust_remote_code, dtype=precision.torch_dtype
        )
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.request = request
        self.stop_ids = stop_token_ids(self.tokenizer, request.model_dir)
        self.batch_size = request.batch_size
        self.max_prompt_tokens = request.max_prompt_tokens
        self.progress = progress

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
        return generate_all(self, prompts, sampling)

    def close(self) -> None:
        self.model = None  # the weights go with their last reference

    def generate_batches(self, batches: Sequence[Batch], sampling: Sampling) -> list[list[list[Completion]]]:
        """For each batch, for each of its prompts, sampling.num_samples completions."""
        import torch

        if sampling.max_new_tokens > self.request.max_new_tokens:
            raise ValueError(
                f"hf engine: asked for {sampling.max_new_tokens} new tokens but built for at most "
                f"{self.request.max_new_tokens}; build the engine with the larger max_new_tokens"
            )

        with torch.inference_mode():
            bar = tqdm(batches, desc="generate", unit="batch", disable=not self.progress)
            return [self._generate_batch(batch, sampling) for batch in bar]

    def next_token_logprobs(self, prompt_token_ids: Sequence[Sequence[int]], candidates: Sequence[int]) -> np.ndarray:
        """One forward per `batch_size` prompts (longest first, left-padded), fp32 log-softmax at the last position."""
        import torch

        out = np.empty((len(prompt_token_ids), len(candidates)))
        order = sorted(range(len(prompt_token_ids)), key=lambda i: (-len(prompt_token_ids[i]), i))
        pad_id = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                prompts = [list(prompt_token_ids[r]) for r in rows]
                width = max(len(ids) for ids in prompts)
                input_ids = [[pad_id] * (width - len(ids)) + ids for ids in prompts]
                mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
                # Positions count real tokens only, as generate() does: a left-padded prompt then sees the same
                # positions as alone (models with absolute positions need it; RoPE's sums stay closer too).
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(
                    input_ids=torch.tensor(input_ids, device=self.model.device),
                    attention_mask=mask.to(self.model.device),
                    position_ids=positions.to(self.model.device),
                    logits_to_keep=1,
                ).logits[:, -1]
                logprobs = torch.log_softmax(logits.float(), dim=-1)[:, list(candidates)]
                out[rows] = logprobs.double().cpu().numpy()
        return out

    def _generate_batch(self, batch: Batch, sampling: Sampling) -> list[list[Completion]]:
        import torch
        from transformers import LogitsProcessorList, TemperatureLogitsWarper

        from sppo.sampling import NucleusFilter, StepLogprobs

        eos_id = self.tokenizer.eos_token_id
        pad_id = self.tokenizer.pad_token_id
        rows = batch.input_ids
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], device=self.model.device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.model.device)
        torch.manual_seed(batch_seed(sampling.seed, batch))
        sample = sampling.temperature > 0
        # The processors in order: the raw log-probabilities (sppo.generation.Completion), then the
        # temperature, then the nucleus (transformers' top_p, without sorting the vocabulary: sppo.sampling);
        # generate() gets temperature 1 and top_p 1 so it adds no warper of its own before ours.
        recorder = StepLogprobs(eos_id) if sampling.logprobs else None
        processors = [recorder] if recorder else []
        if sample and sampling.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
        if sample and sampling.top_p < 1.0:
            processors.append(NucleusFilter(sampling.top_p))
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=sample,
            temperature=1.0 if sample else None,
            top_p=1.0 if sample else None,
            logits_processor=LogitsProcessorList(processors),
            top_k=None,
            max_new_tokens=sampling.max_new_tokens + (1 if recorder else 0),
            num_return_sequences=sampling.num_samples,
            pad_token_id=pad_id,
            eos_token_id=sorted(self.stop_ids),  # the same stop ids as every engine
        )
        generated = out[:, width:]
        if recorder:
            token_lps, eos_lps = (t.tolist() for t in recorder.finish(generated[:, -1]))
        completions: list[list[Completion]] = [[] for _ in rows]
        for row, tokens in enumerate(generated.tolist()):
            if recorder:
                args = (tokens, token_lps[row], eos_lps[row], self.stop_ids, sampling.max_new_tokens)
                tokens, logprob, finished = sequence_logprob(*args)
            else:
                stop = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
                finished, logprob = stop is not None, None
                tokens = tokens[:stop] if finished else tokens
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            completions[row // sampling.num_samples].append(
                Completion(text, len(tokens), finished, tuple(tokens), logprob)
            )
        return completions
