"""Token batches of preference pairs, in two layouts, and where in them each response token is predicted.

`collate` puts the chosen and the rejected sequence of each pair in rows of their own (prompt + response),
as TRL's collator does. `collate_shared` puts a whole pair in one row, prompt + chosen + rejected, and
masks attention so the rejected tokens see the prompt but not the chosen ones, with positions that restart
after the prompt: every token then has exactly the context (and the rotary position) it has in its own
row, and the prompt, a third to a half of a chat-templated pair here, is computed once instead of twice.

Both say which logits to score in the same form, so `sppo.logprobs.sequence_logprobs` has one path:
`rows` and `positions` of the hidden states that predict a response token, the `targets` they predict,
and the `owners`: which sequence (chosen ones 0..B-1, then rejected ones B..2B-1) each belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenizedPair:
    prompt_id: str
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    values: dict[str, float]  # the pair's per-pair numbers from train.parquet (chosen_probs, ...), for the loss
    truncated: bool = False  # the prompt or the responses lost tokens to max_length
    # log pi_ref of (chosen, rejected) as the generating engine computed it, when these exact sequences are
    # what it sampled (sppo.generation.Completion); None: the reference pass computes them.
    reference: tuple[float, float] | None = None


def pair_length(pair: TokenizedPair) -> int:
    """Tokens of the pair's longer sequence: what a batch of one row per sequence pads to (a shared-prompt row
    holds both responses, and grows with the longer one too)."""
    return len(pair.prompt) + max(len(pair.chosen), len(pair.rejected))


# Attention implementations that take a custom 4D mask as given (flash attention and paged kernels do not).
CUSTOM_MASK_ATTENTION = ("sdpa", "eager")


def collate(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences then rejected ones in one right-padded batch (right padding keeps positions exact)."""
    seqs = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    width = max(len(a) + len(b) for a, b in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    response = torch.zeros((len(seqs), width), dtype=torch.bool)
    for row, (prompt, resp) in enumerate(seqs):
        n = len(prompt) + len(resp)
        ids[row, :n] = torch.tensor(prompt + resp)
        attention[row, :n] = 1
        response[row, len(prompt) : n] = True
    rows, positions = response[:, 1:].nonzero(as_tuple=True)  # position t predicts token t+1
    return {
        "input_ids": ids,
        "attention_mask": attention,
        "response_mask": response,
        "rows": rows,
        "positions": positions,
        "targets": ids[rows, positions + 1],
        "owners": rows,
        "sequences": torch.tensor(len(seqs)),
    }


def collate_shared(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded row per pair: prompt, chosen, rejected. The attention mask is 4D (batch, 1, query,
    key), True where a query may attend: causal, except that rejected queries skip the chosen keys; padding
    queries attend only to themselves (a row with no key at all would make the softmax NaN)."""
    lengths = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs]
    width = max(lengths)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(pairs), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(pairs), 1, 1)
    rows, positions, owners = [], [], []
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for b, (pair, n) in enumerate(zip(pairs, lengths, strict=True)):
        p, c, r = len(pair.prompt), len(pair.chosen), len(pair.rejected)
        ids[b, :n] = torch.tensor(pair.prompt + pair.chosen + pair.rejected)
        position_ids[b, : p + c] = torch.arange(p + c)
        position_ids[b, p + c : n] = torch.arange(p, p + r)
        allowed[b, :n, :n] = causal[:n, :n]
        allowed[b, p + c : n, p : p + c] = False
        # The prompt's last position predicts the first token of both responses; after that each response
        # token predicts the next one of its own response.
        chosen_from = torch.arange(p - 1, p + c - 1)
        rejected_from = torch.cat([torch.tensor([p - 1]), torch.arange(p + c, n - 1)])
        rows += [torch.full((c + r,), b)]
        positions += [chosen_from, rejected_from]
        owners += [torch.full((c,), b), torch.full((r,), len(pairs) + b)]
    rows_t, positions_t = torch.cat(rows), torch.cat(positions)
    targets = torch.cat([torch.tensor(pair.chosen + pair.rejected) for pair in pairs])
    return {
        "input_ids": ids,
        "attention_mask": allowed[:, None],
        "position_ids": position_ids,
        "rows": rows_t,
        "positions": positions_t,
        "targets": targets,
        "owners": torch.cat(owners),
        "sequences": torch.tensor(2 * len(pairs)),
    }


@dataclass(frozen=True)
class Batcher:
    """Makes a micro-batch of pairs in the layout chosen for the model, and counts its padding."""

    pad_id: int
    shared_prompt: bool

    def __call__(self, pairs: Sequence[TokenizedPair]) -> dict[str, torch.Tensor]:
        return collate_shared(pairs, self.pad_id) if self.shared_prompt else collate(pairs, self.pad_id)

    def row_lengths(self, pairs: Sequence[TokenizedPair]) -> list[int]:
        """Tokens of each row of the batch this makes of `pairs`, padding excluded."""
        if self.shared_prompt:
            return [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs]
        return [len(p.prompt) + len(r) for p in pairs for r in (p.chosen, p.rejected)]

    def token_counts(self, pairs: Sequence[TokenizedPair]) -> tuple[int, int]:
        """(real tokens, tokens computed including padding) of the batch this makes of `pairs`."""
        rows = self.row_lengths(pairs)
        return sum(rows), len(rows) * max(rows)


def batcher_for(model, pad_id: int, shared_prompt: bool) -> Batcher:
    """The shared-prompt layout where asked for and the model's attention takes a custom mask; else one row
    per sequence."""
    return Batcher(pad_id, shared_prompt and _attention(model) in CUSTOM_MASK_ATTENTION)


def attention_mask_for(model, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A collated mask as the model's attention takes it: 2D and SDPA's boolean 4D masks as they are; the
    eager implementation adds its mask to the scores, so a boolean 4D mask becomes 0 / the dtype's minimum."""
    if mask.ndim == 4 and _attention(model) == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


def _attention(model) -> str | None:
    """The attention implementation of an HF model, or of the one a DeepSpeed engine wraps (`.module`)."""
    return getattr(getattr(getattr(model, "module", model), "config", None), "_attn_implementation", None)
