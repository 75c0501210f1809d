"""generate: K responses per training prompt of this iteration, sampled from pi_t."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sppo.config import RecipeConfig
from sppo.generation import HFGenerator, Sampling
from sppo.models import configure_torch
from sppo.prompts import PromptRecord, load_prompts, split_prompts
from sppo.schemas import GENERATIONS, write_rows
from sppo.store import ArtifactStore, Manifest, commit_stage

GENERATIONS_FILE = "generations.parquet"


def load_splits(recipe: RecipeConfig):
    d = recipe.data
    return split_prompts(load_prompts(d.prompts, d.prompt_column), d.eval_prompts, d.split_seed)


def training_prompts(recipe: RecipeConfig, iteration: int) -> list[PromptRecord]:
    return load_splits(recipe).for_iteration(iteration, recipe.data.prompts_per_iteration)


def generate(recipe: RecipeConfig, policy: str, iteration: int, out: str) -> Manifest:
    g = recipe.generate
    records = training_prompts(recipe, iteration)  # before the model loads: a bad prompt file fails fast

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        configure_torch(recipe.threads)
        generator = HFGenerator(inputs["policy"], g.batch_size, g.max_prompt_tokens, recipe.model.trust_remote_code)
        # Each iteration samples under its own seed; the same recipe and iteration reproduce it exactly.
        sampling = Sampling(g.num_samples, g.temperature, g.top_p, g.max_new_tokens, seed=g.seed + iteration)
        started = time.time()
        completions = generator.generate([r.prompt for r in records], sampling)
        seconds = time.time() - started
        rows = [
            {
                "prompt_id": r.id,
                "prompt": r.prompt,
                "constraints": json.dumps(list(r.constraints)),
                "responses": [c.text for c in cs],
                "response_tokens": [c.num_tokens for c in cs],
                "finished": [c.finished for c in cs],
            }
            for r, cs in zip(records, completions, strict=True)
        ]
        tokens = sum(sum(row["response_tokens"]) for row in rows)
        return {
            "rows": write_rows(rows, GENERATIONS, tmp / GENERATIONS_FILE),
            "tokens": tokens,
            "tokens_per_second": round(tokens / max(seconds, 1e-9), 2),
        }

    fingerprint = f"{recipe.fingerprint('data', 'generate')}-iter{iteration}"
    return commit_stage(ArtifactStore(recipe.store), out, "generate", fingerprint, {"policy": policy}, produce)
