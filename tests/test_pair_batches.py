"""The shared-prompt layout (one row per pair) scores every response token as separate rows do."""

import pytest
import torch

from sppo.config import TrainConfig
from sppo.logprobs import reference_logprobs, sequence_logprobs
from sppo.models import load_policy
from sppo.pair_batches import Batcher, batcher_for, collate, collate_shared
from sppo.pair_tokens import tokenize_pairs
from sppo.training import train_policy

ROWS = [
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I like turtles a lot, really, truly.",
     "chosen_probs": 0.8, "chosen_probs_win": 0.7, "chosen_probs_lose": 0.3},
    {"prompt": "Say hi in lowercase, please, and nothing else at all.", "chosen": "hi there, friend " * 4,
     "rejected": "HELLO", "chosen_probs": 0.6, "chosen_probs_win": 0.65, "chosen_probs_lose": 0.4},
    {"prompt": "Count.", "chosen": "one two three", "rejected": "1 2 3",
     "chosen_probs": 0.5, "chosen_probs_win": 0.55, "chosen_probs_lose": 0.45},
]  # fmt: skip


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    model, tokenizer = load_policy(tiny_model_dir, training=True)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def pairs(policy):
    return tokenize_pairs(ROWS, policy[1], max_length=256, max_prompt_length=128)


class Wrapped(torch.nn.Module):
    """A model reached through `.module` (as a DeepSpeed engine is): sequence_logprobs runs its own forward."""

    def __init__(self, model):
        super().__init__()
        self.module = model

    def forward(self, **kwargs):
        return self.module(**kwargs)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("wrapped", [False, True], ids=["decoder+head", "own forward"])
def test_one_row_per_pair_scores_as_separate_rows(policy, pairs, attention, wrapped):
    model, tokenizer = policy
    model.set_attn_implementation(attention)
    try:
        scorer = Wrapped(model) if wrapped else model
        with torch.no_grad():
            separate = sequence_logprobs(model, collate(pairs, tokenizer.pad_token_id))
            shared = sequence_logprobs(scorer, collate_shared(pairs, tokenizer.pad_token_id))
    finally:
        model.set_attn_implementation("sdpa")
    assert separate.shape == (2 * len(pairs),)
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-4)


def test_the_rejected_response_does_not_see_the_chosen_one(policy, pairs):
    """The same rejected response scores the same whatever chosen response shares its row; without the mask
    it would read the chosen tokens as context."""
    model, tokenizer = policy
    other = [type(p)(p.prompt_id, p.prompt, p.rejected[:1] * 7, p.rejected, p.values) for p in pairs]
    with torch.no_grad():
        first = sequence_logprobs(model, collate_shared(pairs, tokenizer.pad_token_id)).chunk(2)
        second = sequence_logprobs(model, collate_shared(other, tokenizer.pad_token_id)).chunk(2)
    torch.testing.assert_close(second[1], first[1], rtol=1e-5, atol=1e-4)
    assert (second[0] - first[0]).abs().min() > 1e-3  # the chosen responses did change


def test_the_shared_layout_pads_and_computes_fewer_tokens(pairs):
    separate, shared = Batcher(0, False).token_counts(pairs), Batcher(0, True).token_counts(pairs)
    prompts = sum(len(p.prompt) for p in pairs)
    assert separate[0] - shared[0] == prompts  # each prompt once instead of twice
    assert shared[1] < separate[1]


def test_attention_without_custom_masks_keeps_separate_rows(policy):
    model, _ = policy
    assert batcher_for(model, 0, shared_prompt=True).shared_prompt
    assert not batcher_for(model, 0, shared_prompt=False).shared_prompt
    model.config._attn_implementation = "flash_attention_2"  # not installed here: only the name is read
    try:
        assert not batcher_for(model, 0, shared_prompt=True).shared_prompt
    finally:
        model.config._attn_implementation = "sdpa"


def test_training_in_either_layout_takes_the_same_steps(tiny_model_dir, pairs):
    histories, references = [], []
    for shared in (True, False):
        torch.manual_seed(0)
        model, tokenizer = load_policy(tiny_model_dir, training=True)
        cfg = TrainConfig(
            loss={"type": "sppo", "beta": 0.1},
            learning_rate=1e-3,
            optimizer="adamw",
            batch_size=2,
            shared_prompt=shared,
        )
        references.append(reference_logprobs(model, pairs, 2, tokenizer.pad_token_id, shared_prompt=shared))
        histories.append(train_policy(model, pairs, cfg, tokenizer.pad_token_id, progress=False))
    torch.testing.assert_close(references[0], references[1], rtol=1e-5, atol=1e-4)
    assert len(histories[0]) == len(histories[1]) == 2
    for a, b in zip(*histories, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
