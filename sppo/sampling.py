"""Nucleus (top-p) filtering without sorting the vocabulary.

transformers' TopPLogitsWarper and vLLM's CPU sampler both sort all ~50k logits of every sequence at every
decoding step; on CPU that sort took 45% of vLLM's generation time with SmolLM2 (top_p 0.9: 260 tok/s,
top_p 1.0: 465 tok/s). The nucleus at the temperatures SPPO samples with is a few dozen tokens, so the
`probe` most likely tokens (a partial top-k) hold it for nearly every row; rows where they do not fall back
to the full sort. The kept set is the one the sort-based filters keep: token ranked r (1 = most likely) is
kept when the probability of the tokens ranked above it sums to less than p (so the most likely token always
stays), up to float rounding of sums within ~1e-7 of p."""

from __future__ import annotations

import torch

PROBE = 256


def top_p_filter(logits: torch.Tensor, top_p: torch.Tensor | float, probe: int = PROBE) -> torch.Tensor:
    """`logits` (B, V) with every token outside each row's nucleus set to -inf (in place, and returned).

    top_p: one float for all rows, or a (B,) tensor of per-row values (1.0 keeps the whole row)."""
    rows, vocab = logits.shape
    p = torch.as_tensor(top_p, dtype=torch.float32, device=logits.device).expand(rows)
    probs = logits.float().softmax(dim=-1)
    top_probs, top_ids = probs.topk(min(probe, vocab), dim=-1)  # descending
    above = top_probs.cumsum(dim=-1) - top_probs  # mass of the tokens ranked above each one
    found = above[:, -1] + top_probs[:, -1] >= p  # the probe holds the whole nucleus
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(1, top_ids, above < p[:, None])
    if not found.all():
        rest = (~found).nonzero()[:, 0]
        keep[rest] = _nucleus_by_sort(probs[rest], p[rest])
    keep |= (p >= 1.0)[:, None]
    return logits.masked_fill_(~keep, float("-inf"))


def _nucleus_by_sort(probs: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The same mask from a full descending sort (rows whose nucleus is wider than the probe)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    above = sorted_probs.cumsum(dim=-1) - sorted_probs
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(1, order, above < p[:, None])


class NucleusFilter:
    """top_p_filter as a transformers logits processor; placed after generate()'s temperature warper."""

    def __init__(self, top_p: float):
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return top_p_filter(scores, self.top_p)


class StepLogprobs:
    """A transformers logits processor, placed before any warper: at every decoding step it keeps the raw
    (temperature 1) log-probability of the token sampled at the previous step and of the end-of-turn token,
    which is what vLLM returns as raw logprobs. `finish(last_tokens)` adds the last step's sampled token."""

    def __init__(self, eos_id: int):
        self.eos_id = eos_id
        self.previous: torch.Tensor | None = None
        self.token_logprobs: list[torch.Tensor] = []
        self.eos_logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.token_logprobs.append(self.previous.gather(1, input_ids[:, -1:])[:, 0])
        self.previous = scores.float().log_softmax(dim=-1)
        self.eos_logprobs.append(self.previous[:, self.eos_id].clone())
        return scores

    def finish(self, last_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, steps) log-probabilities of the sampled tokens and of the end-of-turn at each step."""
        self.token_logprobs.append(self.previous.gather(1, last_tokens[:, None])[:, 0])
        return torch.stack(self.token_logprobs, dim=1), torch.stack(self.eos_logprobs, dim=1)
