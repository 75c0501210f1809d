"""train.parquet rows as token ids: the chat-formatted prompt, each response as sampled, and what the
generating engine said of them (pi_ref's log-probs) where that still holds after truncation."""

from __future__ import annotations

from collections.abc import Sequence

from sppo.generation import chat_prompt_ids
from sppo.pair_batches import TokenizedPair

# train.parquet columns that are pi_ref's log-probabilities, not per-pair values for the loss.
REFERENCE_COLUMNS = ("chosen_ref_logprob", "rejected_ref_logprob")


def tokenize_pairs(rows: Sequence[dict], tokenizer, max_length: int, max_prompt_length: int) -> list[TokenizedPair]:
    """Chat-formatted prompt + response + end-of-turn, truncated as the reference's trainer (TRL's DPO
    tokenize_row, truncation_mode keep_end) does: only when prompt + the longer response exceed max_length,
    the prompt keeps its last max_prompt_length tokens; if that is still too long, both responses are cut
    to max_length - max_prompt_length."""
    pairs = []
    for index, row in enumerate(rows):
        prompt = chat_prompt_ids(tokenizer, row["prompt"])
        # Pairs from our own generations carry the sampled token ids: train on exactly those (decoding and
        # re-encoding text need not give them back), else tokenize the text.
        sampled = row.get("chosen_token_ids") is not None and row.get("rejected_token_ids") is not None
        chosen, rejected = (
            (list(row[f"{key}_token_ids"]) if sampled else tokenizer(row[key], add_special_tokens=False)["input_ids"])
            + [tokenizer.eos_token_id]
            for key in ("chosen", "rejected")
        )
        longer = max(len(chosen), len(rejected))
        truncated = len(prompt) + longer > max_length
        if truncated:
            prompt = prompt[-max_prompt_length:]
        if len(prompt) + longer > max_length:
            room = max(1, max_length - max_prompt_length)
            chosen, rejected = chosen[:room], rejected[:room]
        pairs.append(
            TokenizedPair(
                prompt_id=str(row.get("prompt_id", f"row {index}")),
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                values={k: float(v) for k, v in row.items() if isinstance(v, float) and k not in REFERENCE_COLUMNS},
                truncated=truncated,
                # The engine's log-probabilities hold for the sequence it saw: the same prompt, uncut.
                reference=_reference(row)
                if sampled and not truncated and len(prompt) == row.get("prompt_token_count")
                else None,
            )
        )
    return pairs


def _reference(row: dict) -> tuple[float, float] | None:
    chosen, rejected = row.get("chosen_ref_logprob"), row.get("rejected_ref_logprob")
    return None if chosen is None or rejected is None else (float(chosen), float(rejected))
