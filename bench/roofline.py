"""The machine's fp32 roofline: GEMM FLOP/s measured in this run, and the FLOPs a Llama-family model spends per token.

A throughput is turned into a share of the roofline as tokens/s x FLOP/token / GEMM FLOP/s: the fraction of
the machine's dense-matmul speed the work achieves. GEMM speed is the ceiling a transformer's matmuls can reach
on these cores, so the share says how much a stage loses to everything else (small matmuls, memory-bound
decoding, padding, Python)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.context import Context
from bench.report import Row


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-family decoder (gated MLP: gate, up and down projections)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        heads = config["num_attention_heads"]
        return cls(
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            layers=config["num_hidden_layers"],
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            vocab=config["vocab_size"],
        )

    @classmethod
    def of_folder(cls, model_dir: str | Path) -> ModelShape:
        return cls.from_config(json.loads((Path(model_dir) / "config.json").read_text()))

    def matmul_params(self) -> int:
        """Weights every token multiplies through: per layer q, k, v, o and the MLP's three matrices; then the LM
        head. The embedding lookup is no matmul and is left out (a tied LM head still counts, as a matmul)."""
        h, d = self.hidden, self.head_dim
        attention = h * self.heads * d + 2 * h * self.kv_heads * d + self.heads * d * h  # q, k and v, o
        mlp = 3 * h * self.intermediate
        return self.layers * (attention + mlp) + h * self.vocab

    def flop_per_token(self, context: float) -> float:
        """Forward FLOPs of one token that attends to `context` positions (itself included):

            2 x matmul_params()                      (a multiply-add per weight)
          + 4 x layers x heads x head_dim x context   (q.k scores and the weighted sum of v, 2 FLOPs each)

        Norms, rotary embeddings, softmax and sampling are left out: they are a few percent at most."""
        return 2.0 * self.matmul_params() + 4.0 * self.layers * self.heads * self.head_dim * context

    def generation_flops(self, prompt_tokens: int, new_tokens: int) -> float:
        """Forward FLOPs of decoding `new_tokens` after a prompt (token j attends to prompt + j + 1 positions).
        The prompt's own prefill is not counted: only generated tokens are, so the roofline share is a floor."""
        attended = new_tokens * prompt_tokens + new_tokens * (new_tokens + 1) / 2
        return 2.0 * self.matmul_params() * new_tokens + 4.0 * self.layers * self.heads * self.head_dim * attended

    def sequence_flops(self, tokens: int) -> float:
        """Forward FLOPs of one causal pass over a sequence (token t attends to t + 1 positions)."""
        return self.generation_flops(0, tokens)

    def training_flops(self, sequence_lengths: Iterable[int]) -> float:
        """One epoch over sequences as our train stage runs it: forward + backward (3x a forward) for every
        trained sequence, plus one forward each for the reference log-probs."""
        return 4.0 * sum(self.sequence_flops(n) for n in sequence_lengths)


def gemm_gflops(n: int, seconds: float, threads: int, dtype: str = "fp32") -> float:
    """torch.mm GFLOP/s on n x n matrices (fp32 or bf16) with `threads` threads: the median of repeated multiplies."""
    import torch

    torch.set_num_threads(threads)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)
    for _ in range(2):  # warm-up: thread pool, page faults of the output
        torch.mm(a, b)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / statistics.median(times) / 1e9


FIGURES = ("gemm_gflops", "gemm_bf16_gflops", "best_native_gflops", "model_gflop_per_token")


def measure(ctx: Context) -> dict:
    """fp32 and bf16 GEMM; the machine's limit is the faster of them where bf16 is native (AMX or AVX512-BF16),
    fp32's elsewhere (emulated bf16 is measured and shown, never used as the limit)."""
    from sppo.machine import cpu_flags, cpu_model, native_bf16_flags

    n, seconds = ctx.sizes.gemm_n, ctx.sizes.gemm_seconds
    fp32 = gemm_gflops(n, seconds, ctx.threads)
    bf16 = gemm_gflops(n, seconds, ctx.threads, "bf16")
    native = native_bf16_flags()
    best, best_precision = (max(fp32, bf16), "bf16" if bf16 > fp32 else "fp32") if native else (fp32, "fp32")
    shape = ModelShape.of_folder(ctx.model)
    where = f"torch.mm {n}^2, {ctx.threads} threads, median"
    rows = [
        Row("gemm_gflops", fp32, "GFLOP/s", note=f"fp32 {where}"),
        Row("gemm_bf16_gflops", bf16, "GFLOP/s", "fp32 GEMM", fp32, note=f"bf16 {where}"),
        Row(
            "best_native_gflops",
            best,
            "GFLOP/s",
            note=f"{best_precision}: " + (f"native bf16 ({', '.join(native)})" if native else "no native bf16"),
        ),
        Row("model_gflop_per_token", shape.flop_per_token(0) / 1e9, "GFLOP", note="forward, without attention"),
    ]
    details = {
        "gemm_gflops": fp32,
        "gemm_bf16_gflops": bf16,
        "best_gflops": best,
        "best_precision": best_precision,
        "cpu": cpu_model(),
        "native_bf16_flags": native,
        "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4"))),
        "threads": ctx.threads,
        "model_shape": shape.__dict__,
    }
    return {"rows": rows, "details": details}
