"""generate: K responses per training prompt of this iteration, sampled from pi_t."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path

from sppo.artifacts import GENERATIONS, GENERATIONS_FILE, signature, write_rows
from sppo.config import GenerateConfig, RecipeConfig
from sppo.generation import (
    Batch,
    Completion,
    EngineRequest,
    Sampling,
    chat_prompt_text,
    check_completions,
    completions_in_prompt_order,
    count_truncated,
    plan_generation,
)
from sppo.models import configure_torch, load_policy_tokenizer
from sppo.prompts import PromptRecord, load_splits, prompts_digest
from sppo.revisions import hub_data_revision, revision_parts
from sppo.runner import Progress, Runner, run_in_process
from sppo.settings import fingerprint
from sppo.store import ArtifactStore, Manifest, commit_stage

log = logging.getLogger(__name__)


def training_prompts(recipe: RecipeConfig, iteration: int) -> list[PromptRecord]:
    return load_splits(recipe.data).for_iteration(iteration, recipe.data.prompts_per_iteration)


class GenerationWorker:
    """One generation engine: loads pi_t once, then samples whatever batches it is handed."""

    def __init__(self, store: str, policy_url: str, cfg: GenerateConfig, sampling: Sampling, request: EngineRequest):
        configure_torch(request.threads)
        # The driver's verified copy when this machine sees it (same host, shared disk), else our own.
        folder = request.model_dir
        if not Path(folder).is_dir():
            folder = str(ArtifactStore(store).local_copy(policy_url))
        self.generator = cfg.engine.build(dataclasses.replace(request, model_dir=folder))
        self.sampling = sampling

    def __call__(self, batches: list[Batch]) -> list[list[list[Completion]]]:
        return self.generator.generate_batches(batches, self.sampling)

    def close(self) -> None:
        self.generator.close()


def generate(
    recipe: RecipeConfig,
    policy: str,
    iteration: int,
    out: str,
    runner: Runner = run_in_process,
    progress: Progress | None = None,
) -> Manifest:
    """`runner` decides where the generation batches run (in this process by default); the output does not
    depend on it: batches are planned here from the whole prompt list and each draws its own seed.
    `progress(batches done, batches)` is called as batches finish."""
    g = recipe.generate
    records = training_prompts(recipe, iteration)  # before the model loads: a bad prompt file fails fast

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        configure_torch(recipe.threads)
        # Each iteration samples under its own seed; the same recipe and iteration reproduce it exactly.
        sampling = Sampling(
            g.num_samples, g.temperature, g.top_p, g.max_new_tokens, seed=g.seed + iteration, logprobs=True
        )
        prompts = [r.prompt for r in records]
        tokenizer = load_policy_tokenizer(inputs["policy"], recipe.model.trust_remote_code)
        batches = plan_generation(tokenizer, prompts, g.batch_size, g.max_prompt_tokens, g.num_samples)
        prompt_tokens = [0] * len(prompts)
        for b in batches:
            for i, ids in zip(b.prompt_indices, b.input_ids, strict=True):
                prompt_tokens[i] = len(ids)
        truncated = count_truncated(tokenizer, prompts, g.max_prompt_tokens)
        if truncated:
            log.warning(
                "%d of %d prompts are longer than generate.max_prompt_tokens=%d and were cut on the left",
                truncated,
                len(prompts),
                g.max_prompt_tokens,
            )
        # The engine sized to the largest planned batch's sequences and the longest planned prompt.
        request = recipe.engine_request(
            inputs["policy"],
            g.max_new_tokens,
            sequences=max((len(b.prompt_indices) for b in batches), default=0) * g.num_samples or None,
            longest_prompt=max(prompt_tokens, default=0) or None,
        )
        make_worker = functools.partial(GenerationWorker, recipe.store, policy, g, sampling, request)
        started = time.time()
        per_batch = runner(make_worker, batches, progress=progress)
        completions = completions_in_prompt_order(batches, per_batch, len(prompts))
        check_completions(completions, sampling, g.engine.type)
        seconds = time.time() - started
        rows = [
            {
                "prompt_id": r.id,
                "prompt": r.prompt,
                "chat_prompt": chat_prompt_text(tokenizer, r.prompt),
                "constraints": json.dumps(list(r.constraints)),
                "responses": [c.text for c in cs],
                "response_tokens": [c.num_tokens for c in cs],
                "finished": [c.finished for c in cs],
                "prompt_token_count": prompt_tokens[i],
                "response_token_ids": [list(c.token_ids) for c in cs],
                "response_logprobs": [c.logprob for c in cs],
            }
            for i, (r, cs) in enumerate(zip(records, completions, strict=True))
        ]
        tokens = sum(sum(row["response_tokens"]) for row in rows)
        return {
            "rows": write_rows(rows, GENERATIONS, tmp / GENERATIONS_FILE),
            "tokens": tokens,
            "tokens_per_second": round(tokens / max(seconds, 1e-9), 2),
            "prompts_truncated": truncated,
            **({"data_revision": revision} if (revision := hub_data_revision(recipe.data)) else {}),
        }

    # No `compute` section here: where the batches run never changes what they produce.
    store = recipe.open_store()
    return commit_stage(store, out, "generate", fingerprint_of(recipe, iteration), {"policy": policy}, produce)


def fingerprint_of(recipe: RecipeConfig, iteration: int) -> str:
    # The iteration's prompts by content: a prompt file edited under the same path is sampled again.
    prompts = prompts_digest(training_prompts(recipe, iteration))
    parts = (recipe.data, prompts, recipe.generate, recipe.precision, iteration, signature(GENERATIONS))
    return fingerprint(*parts, *revision_parts(hub_data_revision(recipe.data)))
