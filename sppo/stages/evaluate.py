"""evaluate: pi_{t+1} against pi_t and the base on the held-out split, one sampled answer per prompt.

Every model answers under the same seed. A model's answers depend only on the model and the recipe,
so they are cached beside the run (keyed by the model's manifest and the recipe) and pi_t's answers
from the previous iteration are read back instead of generated again."""

from __future__ import annotations

import json
from pathlib import Path

from sppo.config import RecipeConfig
from sppo.engines import build_generator
from sppo.evaluation import head_to_head, response_stats
from sppo.generation import Sampling
from sppo.judges import build_judge
from sppo.models import configure_torch
from sppo.prompts import PromptRecord
from sppo.stages.generate import load_splits
from sppo.store import ArtifactStore, Manifest, commit_stage

METRICS_FILE = "metrics.json"


def answers(
    recipe: RecipeConfig, store: ArtifactStore, model_url: str, model: Path, prompts: list[PromptRecord], cache_url: str
) -> list[dict]:
    """One answer per held-out prompt, read from the run's answer cache when this model already gave them."""
    url = (
        f"{cache_url}/{store.manifest_digest(model_url)[:16]}-{recipe.fingerprint('data', 'generate', 'evaluate')}.json"
    )
    if store.exists(url):
        return json.loads(store.read_bytes(url))
    e, g = recipe.evaluate, recipe.generate
    generator = build_generator(g, model, e.max_new_tokens, recipe.model.trust_remote_code, recipe.threads)
    completions = generator.generate(
        [p.prompt for p in prompts], Sampling(1, e.temperature, e.top_p, e.max_new_tokens, e.seed)
    )
    rows = [
        {"prompt_id": p.id, "response": c[0].text, "num_tokens": c[0].num_tokens}
        for p, c in zip(prompts, completions, strict=True)
    ]
    store.put_bytes(url, json.dumps(rows).encode())
    return rows


def evaluate(recipe: RecipeConfig, policy: str, reference: str, base: str, out: str, cache: str) -> Manifest:
    store = ArtifactStore(recipe.store)
    urls = {"policy": policy, "reference": reference, "base": base}

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        configure_torch(recipe.threads)
        prompts = load_splits(recipe).evaluation
        judge = build_judge(recipe.judge)
        by_role = {role: answers(recipe, store, urls[role], inputs[role], prompts, cache) for role in urls}
        texts = {role: [r["response"] for r in rows] for role, rows in by_role.items()}
        versus = {
            key: head_to_head(judge, prompts, texts["policy"], texts[role])
            for key, role in (("vs_reference", "reference"), ("vs_base", "base"))
        }
        # Per-prompt verdicts go with the samples only: a person reads them beside the answers.
        verdicts = {key: h2h.pop("verdicts") for key, h2h in versus.items()}
        metrics = {
            "prompts": len(prompts),
            "judge": judge.name,
            **versus,
            **{
                role: response_stats(prompts, texts[role], [r["num_tokens"] for r in rows])
                for role, rows in by_role.items()
            },
            "samples": [
                {
                    "prompt": p.prompt,
                    **{role: texts[role][i] for role in texts},
                    "verdict": {key: verdicts[key][i] for key in verdicts},  # the policy's: win, tie or loss
                }
                for i, p in enumerate(prompts[: recipe.evaluate.num_samples_shown])
            ],
        }
        # allow_nan=False: nothing non-finite is committed (an empty set's rate is None, not NaN).
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, allow_nan=False))
        return {
            "rows": len(prompts),
            "win_rate_vs_reference": metrics["vs_reference"]["win_rate"],
            "win_rate_vs_base": metrics["vs_base"]["win_rate"],
        }

    fingerprint = recipe.fingerprint("data", "generate", "evaluate", "judge")
    return commit_stage(store, out, "evaluate", fingerprint, urls, produce)
