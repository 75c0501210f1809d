"""Pick the generation engine a recipe names; both keep sppo.generation's batch contract."""

from __future__ import annotations

from pathlib import Path

from sppo.config import GenerateConfig


def build_generator(
    g: GenerateConfig, model_dir: str | Path, max_new_tokens: int, trust_remote_code: bool, threads: int | None
):
    """An engine serving the policy in `model_dir`; max_new_tokens sizes vLLM's context (HF needs no bound)."""
    if g.backend == "vllm":
        from sppo.generation_vllm import VLLMGenerator  # vLLM is an optional extra

        return VLLMGenerator(
            model_dir, g.batch_size, g.max_prompt_tokens, max_new_tokens, g.vllm, trust_remote_code, threads
        )
    from sppo.generation import HFGenerator

    return HFGenerator(model_dir, g.batch_size, g.max_prompt_tokens, trust_remote_code)
