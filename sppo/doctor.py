"""`python -m sppo doctor`: what this machine offers and what the recipe will use on it, before any work.

Cores, the CPU and whether it computes bf16 natively, the memory free now (machine, NUMA node, cgroup), the
precision `auto` picks and why, and each vLLM engine's KV cache as it would be planned at this moment."""

from __future__ import annotations

from pathlib import Path

from sppo.config import RecipeConfig
from sppo.generators import VLLMGeneratorConfig
from sppo.machine import GIB, NATIVE_BF16_FLAGS, cpu_model, memory_now, native_bf16_flags, usable_cores
from sppo.precision import resolve_precision


def report(recipe: RecipeConfig, model_dir: Path | None) -> list[str]:
    """The doctor's lines; `model_dir`: a folder of the recipe's policy (its shape sizes the KV caches)."""
    memory = memory_now()
    precision = resolve_precision(recipe.precision)
    flags = native_bf16_flags()
    lines = [
        f"cpu: {cpu_model()}, {usable_cores()} usable cores, recipe threads {recipe.threads or 'torch default'}",
        f"native bf16: {', '.join(flags) if flags else 'no (' + ' or '.join(NATIVE_BF16_FLAGS) + ' missing)'}",
        f"memory free now: {memory.available / GIB:.1f} GiB ({memory.describe()})",
        f"precision: {recipe.precision} -> {precision.name} ({precision.reason})",
    ]
    engine = recipe.generate.engine
    if not isinstance(engine, VLLMGeneratorConfig):
        lines.append(f"generate engine: {engine.type} (no KV cache to plan; batches of {recipe.generate.batch_size})")
        return lines
    if model_dir is None or not (model_dir / "config.json").is_file():
        lines.append("engines: no model folder yet to size them from (run `make setup` or prepare-base first)")
        return lines
    from sppo.generators.vllm import plan_kv_cache

    g, e = recipe.generate, recipe.evaluate
    works = {
        "generate": (g.batch_size, g.max_prompt_tokens + g.max_new_tokens + 1),
        "evaluate (each model)": (
            min(g.batch_size, recipe.data.eval_prompts),
            g.max_prompt_tokens + e.max_new_tokens + 1,
        ),
    }
    for name, (sequences, length) in works.items():
        plan = plan_kv_cache(
            model_dir, precision.engine_dtype, sequences, length, engine.cpu_kv_cache_gib, memory.available
        )
        lines.append(
            f"{name} engine: vllm {precision.engine_dtype}, KV cache {plan.cache_bytes / GIB:.2f} GiB, "
            f"{plan.max_num_seqs} of {sequences} sequences at once ({plan.reason}; at most "
            f"{engine.cpu_kv_cache_gib} GiB by generate.engine.cpu_kv_cache_gib)"
        )
    return lines
