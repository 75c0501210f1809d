"""Shims that let llm-blender 0.0.2 run on transformers 5 (see ../shared/stack.md).

llm-blender was written against transformers 4 and touches two names that transformers 5 removed:

- `from transformers.utils.hub import TRANSFORMERS_CACHE` at import of llm_blender.blender.blender and
  blender_utils (the default `cache_dir` of Blender.loadranker). Transformers 4 defined it as the
  huggingface_hub cache, so that is what we put back.
- `tokenizer.batch_encode_plus(texts, max_length=..., padding=..., truncation=..., return_tensors=...)` in
  llm_blender/pair_ranker/collator.py (encode_texts), the path every rank()/compare() call takes. In
  transformers 4 it was the batched form of `__call__`; llm-blender passes a list of strings and keyword
  arguments only, which `__call__` takes unchanged.

We patch transformers at runtime rather than edit site-packages, so a fresh `pip install` keeps working.
"""

from __future__ import annotations


def patch_llm_blender() -> None:
    """Put back the two transformers 4 names llm-blender needs. Idempotent; call before importing it."""
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import constants as hub_constants
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    if not hasattr(transformers_hub, "TRANSFORMERS_CACHE"):
        transformers_hub.TRANSFORMERS_CACHE = hub_constants.HF_HUB_CACHE

    if not hasattr(PreTrainedTokenizerBase, "batch_encode_plus"):

        def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs):
            return self(batch_text_or_text_pairs, **kwargs)

        PreTrainedTokenizerBase.batch_encode_plus = batch_encode_plus
