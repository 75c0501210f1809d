"""PairRM scoring throughput: llm-blender's rank() one prompt at a time (batch_size=1, as the reference
SPPO scripts call it) against our judge's batched call, on the same tiny PairRM-shaped ranker and the
same prompts, side by side in one run. Prints pairs/s (a prompt with K responses is K(K-1)/2 pairs;
PairRM scores both orders of each).

    .venv/bin/python bench/pairrm_throughput.py [--prompts 64] [--k 5] [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from sppo.judges.pairrm import PairRMJudge
from sppo.prompts import load_prompts
from sppo.testing import build_tiny_pairrm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    records = load_prompts("data/prompts.jsonl")[: args.prompts]
    # Responses of varied length drawn from other prompts' text: realistic token counts, no model needed.
    rng = np.random.default_rng(0)
    pool = [r.prompt for r in load_prompts("data/prompts.jsonl")[args.prompts : args.prompts + 500]]
    responses = [[" ".join(rng.choice(pool, size=rng.integers(1, 4))) for _ in range(args.k)] for _ in records]
    pairs = len(records) * args.k * (args.k - 1) // 2
    with tempfile.TemporaryDirectory() as tmp:
        ranker = build_tiny_pairrm(tmp)
        judge = PairRMJudge(str(ranker), mode="scores", batch_size=args.batch)
        blender = judge.blender

        start = time.perf_counter()
        for record, rs in zip(records, responses, strict=True):
            blender.rank([record.prompt], [rs], return_scores=True, batch_size=1, disable_tqdm=True)
        one_by_one = time.perf_counter() - start

        start = time.perf_counter()
        judge.judge(records, responses)
        batched = time.perf_counter() - start

    print(f"{len(records)} prompts x K={args.k} = {pairs} pairs")
    print(f"rank(batch_size=1) per prompt : {pairs / one_by_one:8.1f} pairs/s ({one_by_one:.2f} s)")
    print(f"PairRMJudge batch={args.batch:<3}        : {pairs / batched:8.1f} pairs/s ({batched:.2f} s)")
    print(f"speed-up                      : {one_by_one / batched:8.2f}x")


if __name__ == "__main__":
    main()
