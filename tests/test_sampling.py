"""The nucleus filter keeps exactly the tokens transformers' and vLLM's sort-based top-p keep."""

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from sppo.sampling import NucleusFilter, top_p_filter


def _assert_same_nucleus(got: torch.Tensor, expected: torch.Tensor, logits: torch.Tensor, p) -> None:
    """The same tokens filtered out, except where a token's `above` mass (of the tokens more likely than it)
    is within float rounding of p: there the sort-based filters' own sums decide by the last bit."""
    probs = logits.double().softmax(-1)
    ranked, order = probs.sort(dim=-1, descending=True)
    above = torch.empty_like(probs).scatter_(1, order, ranked.cumsum(-1) - ranked)
    boundary = (above - torch.as_tensor(p, dtype=torch.float64).reshape(-1, 1)).abs() < 1e-5
    differ = torch.isinf(got) != torch.isinf(expected)
    assert not (differ & ~boundary).any(), differ.nonzero()[:5]


def _logits(rows: int, vocab: int, temperature: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Zipf-like scales, as a language model's logits: a few likely tokens and a long tail.
    return torch.randn(rows, vocab, generator=gen) * 3.0 / temperature


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 3.0])
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_same_nucleus_as_transformers(temperature, top_p):
    logits = _logits(16, 5000, temperature, seed=int(temperature * 10 + top_p * 100))
    # A nearly flat row (distinct values: ties make any top-p's choice arbitrary): its nucleus is far wider
    # than the probe, so the sorted fallback runs.
    logits[0] = torch.linspace(0.0, 0.5, logits.shape[1])[torch.randperm(logits.shape[1], generator=torch.Generator())]
    expected = TopPLogitsWarper(top_p)(None, logits.clone())
    got = top_p_filter(logits.clone(), top_p, probe=64)
    _assert_same_nucleus(got, expected, logits, top_p)
    assert torch.equal(got[~torch.isinf(got)], logits[~torch.isinf(got)])  # kept logits are untouched


def test_per_row_top_p_as_vllm_passes_it():
    vllm = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")
    logits = _logits(8, 3000, 0.7, seed=3)
    p = torch.tensor([0.9, 1.0, 0.5, 0.95, 0.9, 0.99, 0.3, 1.0])
    expected = vllm.apply_top_k_top_p_pytorch(logits.clone(), None, p)
    _assert_same_nucleus(top_p_filter(logits.clone(), p), expected, logits, p)


def test_the_most_likely_token_always_stays():
    logits = torch.tensor([[5.0, 1.0, 0.0, -1.0]])
    assert torch.isfinite(top_p_filter(logits.clone(), 1e-6)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(NucleusFilter(1.0)(None, logits.clone())).all()
