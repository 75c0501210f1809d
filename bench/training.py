"""Training pairs/s and tokens/s: our train loop (sppo.training, reference pass included) against TRL's
`DPOTrainer(loss_type="sppo_hard")` with its default reference handling (a frozen copy run at every step), on
the same model, pairs, batch size, max length, optimizer and schedule, fp32; and our achieved FLOP/s against
the GEMM roofline. Model loading and tokenizing are outside both timings; the reference pass is inside both.
Beside full fine-tuning, the same run through a LoRA adapter (train.adapter): pairs/s and each one's peak memory."""

from __future__ import annotations

import gc
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor

from bench.context import Context
from bench.report import Row
from bench.roofline import ModelShape
from bench.texts import bench_prompts, responses

FIGURES = (
    "trl_pairs_per_s",
    "pairs_per_s",
    "trl_tokens_per_s",
    "tokens_per_s",
    "achieved_gflops",
    "pairs_per_s_reference_given",
    "pairs_per_s_separate_rows",
    "pairs_per_s_bf16",
    "bf16_x_limit",
    "pairs_per_s_lora",
    "peak_gb_lora",
)
# The default recipe's training settings, with TRL's hard-label loss so both sides optimise the same objective.
BATCH, MAX_LENGTH, MAX_PROMPT_LENGTH, LEARNING_RATE, WARMUP, BETA = 2, 512, 256, 1e-5, 0.1, 0.01
# The adapter of configs/llama-3-8b-instruct-lora.yaml: rank 16 on every linear layer.
LORA = {"type": "lora", "r": 16, "alpha": 32, "target_modules": "all-linear"}


def bench_pairs(count: int, words: tuple[int, int]) -> list[dict]:
    """train.parquet-like rows: prompts from the prompt file, chosen/rejected texts of `words` words."""
    texts = responses(2 * count, words, seed=2)
    return [
        {
            "prompt_id": r.id,
            "prompt": r.prompt,
            "chosen": texts[2 * i],
            "rejected": texts[2 * i + 1],
            "chosen_probs": 1.0,
            "chosen_probs_win": 1.0,
            "chosen_probs_lose": 0.0,
        }
        for i, r in enumerate(bench_prompts(count))
    ]


def train_ours(
    ctx: Context,
    rows: list[dict],
    reference_given: bool = False,
    shared_prompt: bool = True,
    precision: str = "fp32",
    adapter: dict | None = None,
) -> tuple[float, list[int], list[int]]:
    """Seconds of sppo.training.train_policy (reference log-probs, then one epoch), the sequences' lengths,
    and the lengths of the rows it computes (one per pair, prompt + both responses, in the shared-prompt
    layout; one per sequence otherwise).

    reference_given: the pairs carry pi_ref's log-probabilities, as the train stage's pairs do when the
    generating engine returned them (sppo.generation.Completion.logprob); they are computed here, untimed,
    by the same reference pass, so training skips it. shared_prompt: train.shared_prompt. precision: the recipe's
    (bf16: autocast over fp32 master weights, its own reference pass). adapter: train.adapter (default none)."""
    from dataclasses import replace

    from sppo.config import TrainConfig
    from sppo.logprobs import reference_logprobs
    from sppo.models import load_policy
    from sppo.pair_batches import Batcher
    from sppo.pair_tokens import tokenize_pairs
    from sppo.precision import resolve_precision
    from sppo.training import train_policy

    cfg = TrainConfig(
        loss={"type": "sppo_hard", "beta": BETA},
        learning_rate=LEARNING_RATE,
        optimizer="rmsprop",
        warmup_ratio=WARMUP,
        epochs=1,
        batch_size=BATCH,
        grad_accum=1,
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_PROMPT_LENGTH,
        shared_prompt=shared_prompt,
        adapter=adapter or "none",
    )
    model, tokenizer = load_policy(ctx.model, training=True)
    model = cfg.adapter.wrap(model, cfg.seed)
    pairs = tokenize_pairs(rows, tokenizer, cfg.max_length, cfg.max_prompt_length)
    if reference_given:
        ref = reference_logprobs(model, pairs, 4 * BATCH, tokenizer.pad_token_id).tolist()
        pairs = [replace(p, reference=tuple(r)) for p, r in zip(pairs, ref, strict=True)]
    start = time.perf_counter()
    train_policy(model, pairs, cfg, tokenizer.pad_token_id, progress=False, precision=resolve_precision(precision))
    seconds = time.perf_counter() - start
    return seconds, Batcher(0, False).row_lengths(pairs), Batcher(0, shared_prompt).row_lengths(pairs)


def in_fresh_process(ctx: Context, *args, **kwargs) -> tuple[tuple[float, list[int], list[int]], int]:
    """train_ours(ctx, *args, **kwargs) in a new process, and that process's peak resident memory (bytes): each
    run's peak is then its own, not the highest of every run before it in one process. It includes the ~0.5 GB
    every run pays for Python, torch and transformers."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_train_ours_measuring_peak, ctx, *args, **kwargs).result()


def _train_ours_measuring_peak(ctx: Context, *args, **kwargs):
    from sppo.models import configure_torch

    configure_torch(ctx.threads)
    result = train_ours(ctx, *args, **kwargs)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def train_trl(ctx: Context, rows: list[dict]) -> tuple[float, float, list[int]]:
    """Seconds of DPOTrainer.train() and of building the trainer (dataset preparation, reference copy), and the
    sequences' lengths as TRL tokenized them."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from sppo.generation import chat_prompt_text

    tokenizer = AutoTokenizer.from_pretrained(ctx.model)
    model = AutoModelForCausalLM.from_pretrained(ctx.model, dtype=torch.float32)
    # The prompt as text in the chat template, as tests/test_losses.py gives it: TRL then tokenizes exactly as we do.
    dataset = Dataset.from_list(
        [
            {"prompt": chat_prompt_text(tokenizer, r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in rows
        ]
    )
    args = DPOConfig(
        output_dir=str(ctx.work / "trl"),
        loss_type="sppo_hard",
        beta=BETA,
        learning_rate=LEARNING_RATE,
        optim="rmsprop",
        lr_scheduler_type="linear",
        warmup_steps=WARMUP,  # a float below 1 is a share of the steps
        max_grad_norm=1.0,
        num_train_epochs=1,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        max_length=MAX_LENGTH,
        bf16=False,  # TRL defaults to bf16 autocast (also on CPU) and gradient checkpointing
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        push_to_hub=False,
        disable_tqdm=True,
        seed=0,
    )
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    prepared = trainer.train_dataset
    lengths = [
        len(p) + len(c)
        for p, chosen, rejected in zip(
            prepared["prompt_ids"], prepared["chosen_ids"], prepared["rejected_ids"], strict=True
        )
        for c in (chosen, rejected)
    ]
    return seconds, setup_s, lengths


def measure(ctx: Context) -> dict:
    from sppo.models import configure_torch

    configure_torch(ctx.threads)
    rows = bench_pairs(ctx.sizes.train_pairs, ctx.sizes.train_response_words)
    # Full fine-tuning and LoRA each in a process of its own, so that each has its own peak memory.
    (ours_s, lengths, computed_rows), ours_peak = in_fresh_process(ctx, rows)
    (lora_s, _, _), lora_peak = in_fresh_process(ctx, rows, adapter=LORA)
    given_s, _, _ = train_ours(ctx, rows, reference_given=True)
    gc.collect()
    separate_s, _, _ = train_ours(ctx, rows, shared_prompt=False)
    gc.collect()
    bf16_s, _, _ = train_ours(ctx, rows, precision="bf16")
    gc.collect()
    trl_s, trl_setup_s, trl_lengths = train_trl(ctx, rows)

    tokens = sum(lengths)  # prompt + response tokens of every chosen and rejected sequence, padding excluded
    flops = ModelShape.of_folder(ctx.model).training_flops(computed_rows)
    n = len(rows)
    note = f"{n} pairs, batch {BATCH}, {tokens / len(lengths):.0f} tokens per sequence on average, RMSprop, fp32"
    result = [
        Row("trl_pairs_per_s", n / trl_s, "pairs/s", note="DPOTrainer.train(), frozen reference copy"),
        Row("pairs_per_s", n / ours_s, "pairs/s", "TRL", n / trl_s, target=">= 1.5x", note=note),
        Row("trl_tokens_per_s", tokens / trl_s, "tok/s"),
        Row("tokens_per_s", tokens / ours_s, "tok/s", "TRL", tokens / trl_s),
        Row(
            "achieved_gflops",
            flops / ours_s / 1e9,
            "GFLOP/s",
            "GEMM",
            ctx.gemm_gflops,
            ratio_unit="%",
            note="4 forwards per row computed (one per pair: prompt + both responses): forward + backward (3x) "
            "and the reference pass (1x)",
        ),
        Row(
            "pairs_per_s_reference_given",
            n / given_s,
            "pairs/s",
            "TRL",
            n / trl_s,
            target=">= 1.5x",
            note="the train stage on generated pairs: pi_ref's log-probs come from generation, no reference pass",
        ),
        Row(
            "pairs_per_s_separate_rows",
            n / separate_s,
            "pairs/s",
            "TRL",
            n / trl_s,
            note="train.shared_prompt=false: chosen and rejected in rows of their own, each with the prompt",
        ),
        Row(
            "pairs_per_s_bf16",
            n / bf16_s,
            "pairs/s",
            "ours fp32",
            n / ours_s,
            note="precision bf16: autocast over fp32 master weights, fp32 log-softmax and loss, own reference pass",
        ),
        Row(
            "bf16_x_limit",
            bf16_s,
            "s",
            "compute limit",
            flops / (ctx.best_gflops * 1e9),
            target="<= 2.5x",
            note=f"the bf16 run's seconds against its FLOPs at the best native GEMM ({ctx.best_gflops:.0f} GFLOP/s)",
        ),
        Row(
            "pairs_per_s_lora",
            n / lora_s,
            "pairs/s",
            "full fine-tuning",
            n / ours_s,
            note="train.adapter lora r=16 on every linear layer: no weight gradients or optimizer state for the "
            "frozen base, reference pass with the adapter off; fp32",
        ),
        Row(
            "peak_gb_lora",
            lora_peak / 1e9,
            "GB",
            "full fine-tuning",
            ours_peak / 1e9,
            ratio_unit="%",
            note="peak resident memory of each run's own process (ru_maxrss), loading and imports included",
        ),
    ]
    details = {
        "pairs": n,
        "ours_s": ours_s,
        "ours_reference_given_s": given_s,
        "ours_separate_rows_s": separate_s,
        "ours_bf16_s": bf16_s,
        "ours_lora_s": lora_s,
        "ours_peak_bytes": ours_peak,
        "ours_lora_peak_bytes": lora_peak,
        "trl_s": trl_s,
        "trl_setup_s": trl_setup_s,
        "tokens": tokens,
        "same_tokens_as_trl": sorted(lengths) == sorted(trl_lengths),
        "training_gflop": flops / 1e9,
    }
    return {"rows": result, "details": details}
