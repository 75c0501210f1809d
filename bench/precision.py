"""How exact bf16 is: per-sequence log-probabilities of the same sampled responses (the default model), computed
by training's forward in fp32 and under bf16 autocast, and returned by the vLLM engine that sampled them in each
precision. A sequence log-ratio starts from these: SPPO's targets eta*(P - 1/2) are about +-20 nats at the
default beta 0.01, so a gap of a few tenths of a nat is noise at 1-2% of a target; DPO's margin is beta x the
log-ratio. No speed here (bench/roofline, generation and training measure that)."""

from __future__ import annotations

import gc

import numpy as np

from bench.context import Context
from bench.report import Row
from bench.texts import bench_prompts

FIGURES = (
    "train_bf16_vs_fp32_mean_nats",
    "train_bf16_vs_fp32_max_nats",
    "engine_bf16_vs_train_bf16_mean_nats",
    "engine_bf16_vs_train_bf16_max_nats",
    "engine_bf16_vs_train_fp32_mean_nats",
    "engine_fp32_vs_train_fp32_mean_nats",
)
NEW_TOKENS = 128
SAMPLES = 2  # per prompt


def _sample(ctx: Context, prompts: list[str], precision: str):
    """(token ids, the engine's log pi(tokens + end-of-turn)) of every sampled response, from vLLM in `precision`."""
    from sppo.generation import EngineRequest, Sampling
    from sppo.generators import VLLMGeneratorConfig

    request = EngineRequest(str(ctx.model), len(prompts) * SAMPLES, 256, NEW_TOKENS, precision, ctx.threads)
    engine = VLLMGeneratorConfig(cpu_kv_cache_gib=2).build(request)
    try:
        out = engine.generate(prompts, Sampling(SAMPLES, 0.7, 0.9, NEW_TOKENS, seed=0, logprobs=True))
    finally:
        engine.close()
        gc.collect()
    return [(i, c.token_ids, c.logprob) for i, cs in enumerate(out) for c in cs]


def _training_logprobs(ctx: Context, prompts: list[str], samples, bf16: bool) -> np.ndarray:
    """Training's log pi of each sample (tokens + end-of-turn), its reference pass in fp32 or bf16 autocast."""
    from sppo.generation import chat_prompt_ids
    from sppo.logprobs import reference_logprobs
    from sppo.models import load_policy
    from sppo.pair_batches import TokenizedPair

    model, tokenizer = load_policy(ctx.model, training=False)
    eos = tokenizer.eos_token_id
    pairs = [
        TokenizedPair(f"s{k}", chat_prompt_ids(tokenizer, prompts[i]), list(ids) + [eos], list(ids) + [eos], {})
        for k, (i, ids, _) in enumerate(samples)
    ]
    logps = reference_logprobs(model, pairs, 8, tokenizer.pad_token_id, bf16=bf16)[:, 0].double().numpy()
    del model
    gc.collect()
    return logps


def measure(ctx: Context) -> dict:
    from sppo.models import configure_torch

    configure_torch(ctx.threads)
    prompts = [r.prompt for r in bench_prompts(8 if ctx.quick else 32)]
    gaps, lengths = {}, {}
    for precision in ("bf16", "fp32"):
        samples = _sample(ctx, prompts, precision)
        engine = np.array([lp for *_, lp in samples])
        lengths[precision] = [len(ids) + 1 for _, ids, _ in samples]
        train = {name: _training_logprobs(ctx, prompts, samples, bf16=name == "bf16") for name in ("fp32", "bf16")}
        if precision == "bf16":
            gaps["train_bf16_vs_fp32"] = np.abs(train["bf16"] - train["fp32"])
            gaps["engine_bf16_vs_train_bf16"] = np.abs(engine - train["bf16"])
            gaps["engine_bf16_vs_train_fp32"] = np.abs(engine - train["fp32"])
        else:
            gaps["engine_fp32_vs_train_fp32"] = np.abs(engine - train["fp32"])
    rows = []
    for figure in FIGURES:
        name, stat = figure.removesuffix("_nats").rsplit("_", 1)
        value = float(gaps[name].mean() if stat == "mean" else gaps[name].max())
        rows.append(Row(figure, value, "nats", note=f"|difference| of sequence log-probs, {stat} over samples"))
    details = {
        "samples": {p: len(v) for p, v in lengths.items()},
        "tokens_per_sample": {p: float(np.mean(v)) for p, v in lengths.items()},
        "gap_percentiles": {k: np.percentile(v, [50, 90, 99]).round(4).tolist() for k, v in gaps.items()},
    }
    return {"rows": rows, "details": details}
