"""GPU profile, ranking: bench/ranking.py's measurement (our batched PairRM judge against llm-blender's
rank(batch_size=1) per prompt, a random ranker of PairRM's shape) on the GPU, and the GPU's batched scores against
the same batched call in fp32 on the CPU: they may differ by llm-blender's fp16 rounding only.

Without CUDA (`--profile gpu --quick`) it runs on the CPU, and the comparison is left out."""

from __future__ import annotations

import numpy as np

from bench.context import Context
from bench.ranking import FIGURES as RANKING_FIGURES
from bench.ranking import side_by_side
from bench.report import Row

FIGURES = (*RANKING_FIGURES, "max_diff_vs_cpu")
TOLERANCE = 3e-2  # relative to the largest score: fp16 rounding through a 24-layer ranker


def measure(ctx: Context) -> dict:
    import torch

    from sppo.judges.pairrm import PairRMJudge

    on_gpu = torch.cuda.is_available()
    result, ranked = side_by_side(ctx, "cuda" if on_gpu else "cpu")
    if not result["details"]["scores_finite"]:
        raise RuntimeError("the ranker's scores are not finite")
    if not on_gpu:
        result["rows"].append(Row("max_diff_vs_cpu", None, "", note="no GPU: nothing to compare"))
        return result
    cpu = PairRMJudge(str(ranked.ranker), mode="scores", batch_size=ctx.sizes.rank_batch, device="cpu")
    cpu_scores = np.stack([j.scores for j in cpu.judge(ranked.records, ranked.candidates)])
    diff = float(np.abs(ranked.scores - cpu_scores).max())
    tolerance = TOLERANCE * max(1.0, float(np.abs(cpu_scores).max()))
    if diff > tolerance:
        raise RuntimeError(f"GPU and CPU scores differ by {diff:.3g}, more than fp16 rounding ({tolerance:.3g})")
    result["rows"].append(Row("max_diff_vs_cpu", diff, "", note=f"max |cuda - cpu fp32| (<= {tolerance:.2g})"))
    return result
