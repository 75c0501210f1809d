"""evaluate: pi_{t+1} against pi_t and the base on the held-out split, one sampled answer per prompt.

Every model answers under the same seed. A model's answers depend only on the model and the recipe,
so they are cached beside the run (keyed by the model's manifest and the recipe) and pi_t's answers
from the previous iteration are read back instead of generated again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa

from sppo.config import RecipeConfig
from sppo.evaluation import head_to_head, response_stats
from sppo.generation import HFGenerator, Sampling
from sppo.judges import build_judge
from sppo.models import configure_torch
from sppo.prompts import PromptRecord
from sppo.schemas import read_rows, write_rows
from sppo.stages.generate import load_splits
from sppo.store import Manifest, commit_stage, manifest_digest

ANSWERS = pa.schema([("prompt_id", pa.string()), ("response", pa.string()), ("num_tokens", pa.int32())])
METRICS_FILE = "metrics.json"


def answers(recipe: RecipeConfig, model: Path, prompts: list[PromptRecord], cache: Path) -> list[dict]:
    key = f"{manifest_digest(model)[:16]}-{recipe.fingerprint('data', 'generate', 'evaluate')}"
    path = cache / f"{key}.parquet"
    if path.is_file():
        return read_rows(path, ANSWERS)
    e, g = recipe.evaluate, recipe.generate
    generator = HFGenerator(model, g.batch_size, g.max_prompt_tokens, recipe.model.trust_remote_code)
    completions = generator.generate(
        [p.prompt for p in prompts], Sampling(1, e.temperature, e.top_p, e.max_new_tokens, e.seed)
    )
    rows = [
        {"prompt_id": p.id, "response": c[0].text, "num_tokens": c[0].num_tokens}
        for p, c in zip(prompts, completions, strict=True)
    ]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    write_rows(rows, ANSWERS, tmp)
    tmp.rename(path)
    return rows


def evaluate(recipe: RecipeConfig, policy: Path, reference: Path, base: Path, out: Path, cache: Path) -> Manifest:
    def produce(tmp: Path) -> dict:
        configure_torch(recipe.threads)
        prompts = load_splits(recipe).evaluation
        judge = build_judge(recipe.judge)
        by_role = {
            role: answers(recipe, path, prompts, cache)
            for role, path in (("policy", policy), ("reference", reference), ("base", base))
        }
        texts = {role: [r["response"] for r in rows] for role, rows in by_role.items()}
        metrics = {
            "prompts": len(prompts),
            "judge": judge.name,
            "vs_reference": head_to_head(judge, prompts, texts["policy"], texts["reference"]),
            "vs_base": head_to_head(judge, prompts, texts["policy"], texts["base"]),
            **{
                role: response_stats(prompts, texts[role], [r["num_tokens"] for r in rows])
                for role, rows in by_role.items()
            },
            "samples": [
                {"prompt": p.prompt, **{role: texts[role][i] for role in texts}}
                for i, p in enumerate(prompts[: recipe.evaluate.num_samples_shown])
            ],
        }
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        return {
            "rows": len(prompts),
            "win_rate_vs_reference": metrics["vs_reference"]["win_rate"],
            "win_rate_vs_base": metrics["vs_base"]["win_rate"],
        }

    inputs = {"policy": policy, "reference": reference, "base": base}
    return commit_stage(out, "evaluate", recipe.fingerprint("data", "generate", "evaluate", "judge"), inputs, produce)
