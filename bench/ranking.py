"""Ranking pairs/s: our batched PairRM judge against llm-blender's `rank(batch_size=1)` per prompt (as the
reference SPPO scripts call it), on the same ranker, prompts and responses.

The ranker has PairRM's real dimensions (a deberta-v3-large backbone) and length limits with random weights,
built here from a config (nothing downloads; PairRM's weights are on the hub only): speed depends on the
shapes, not on the weights. Its tokenizer knows every word of the texts, so they cost about as many tokens
as under deberta-v3's own. A prompt with K responses is K(K-1)/2 pairs; PairRM scores both orders of each."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.context import Context
from bench.report import Row
from bench.texts import bench_prompts, responses

FIGURES = ("loop_pairs_per_s", "batched_pairs_per_s", "ranker_build_s")


@dataclass(frozen=True)
class Ranked:
    ranker: Path  # the random ranker's folder
    records: list  # the prompts (PromptRecord)
    candidates: list[list[str]]  # K responses per prompt
    scores: np.ndarray  # (prompts, K, K) batched scores


def measure(ctx: Context) -> dict:
    return side_by_side(ctx, "cpu")[0]


def side_by_side(ctx: Context, device: str) -> tuple[dict, Ranked]:
    """The measurement on `device`, and what was ranked with the batched scores (for the GPU profile's
    comparison with the CPU)."""
    from sppo.judges.pairrm import PairRMJudge
    from sppo.models import configure_torch
    from sppo.testing import PAIRRM_RANKER, TINY_RANKER, build_tiny_pairrm

    s = ctx.sizes
    configure_torch(ctx.threads)
    records = bench_prompts(s.rank_prompts)
    texts = responses(s.rank_prompts * s.rank_k, s.rank_response_words, seed=1)
    candidates = [texts[i * s.rank_k : (i + 1) * s.rank_k] for i in range(len(records))]
    shape = {"pairrm": PAIRRM_RANKER, "tiny": TINY_RANKER}[s.rank_shape]

    start = time.perf_counter()
    ranker = build_tiny_pairrm(ctx.work / "ranker", shape=shape, words=[r.prompt for r in records] + texts)
    judge = PairRMJudge(str(ranker), mode="scores", batch_size=s.rank_batch, device=device, prompt_format="raw")
    build_s = time.perf_counter() - start
    blender = judge.blender
    tokens = [len(blender.ranker_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    # Warm-up, so neither timing pays for first calls (on a GPU: its context and kernel loading).
    blender.rank([records[0].prompt], [candidates[0]], return_scores=True, batch_size=1, disable_tqdm=True)
    start = time.perf_counter()
    one_by_one = [
        blender.rank([r.prompt], [cs], return_scores=True, batch_size=1, disable_tqdm=True)
        for r, cs in zip(records, candidates, strict=True)
    ]
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = judge.judge(records, candidates)
    batched_s = time.perf_counter() - start

    pairs = len(records) * s.rank_k * (s.rank_k - 1) // 2
    loop = pairs / loop_s
    note = (
        f"{len(records)} prompts x K={s.rank_k} = {pairs} pairs, {s.rank_shape} ranker "
        f"({shape.layers} layers x {shape.hidden_size}), responses {np.mean(tokens):.0f} ranker tokens on average"
    )
    rows = [
        Row("loop_pairs_per_s", loop, "pairs/s", note="llm-blender rank(batch_size=1), one call per prompt"),
        Row(
            "batched_pairs_per_s",
            pairs / batched_s,
            "pairs/s",
            "rank(batch_size=1)",
            loop,
            note=note + f", batch {s.rank_batch}",
        ),
        Row("ranker_build_s", build_s, "s", note="random ranker written and loaded, not in pairs/s"),
    ]
    finite = bool(np.isfinite(np.concatenate(one_by_one)).all() and all(np.isfinite(j.scores).all() for j in batched))
    details = {
        "pairs": pairs,
        "loop_s": loop_s,
        "batched_s": batched_s,
        "response_ranker_tokens_mean": float(np.mean(tokens)),
        "shape": shape.__dict__,
        "scores_finite": finite,
        "device": str(next(blender.ranker.parameters()).device),
    }
    ranked = Ranked(ranker, records, candidates, np.stack([j.scores for j in batched]))
    return {"rows": rows, "details": details}, ranked
