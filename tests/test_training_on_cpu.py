"""Training on a tiny random model: log-prob masking, and one step that moves every parameter and lowers the loss."""

import numpy as np
import pytest
import torch

from sppo.config import TrainConfig
from sppo.logprobs import reference_logprobs, sequence_logprobs
from sppo.models import load_policy
from sppo.pair_batches import batcher_for, collate
from sppo.pair_tokens import tokenize_pairs
from sppo.training import pair_loss, train_policy

ROWS = [
    {
        "prompt": "Name a colour.",
        "chosen": "Blue.",
        "rejected": "I like turtles a lot, really.",
        "chosen_probs": 0.8,
        "chosen_probs_win": 0.7,
        "chosen_probs_lose": 0.3,
    },
    {
        "prompt": "Say hi in lowercase.",
        "chosen": "hi there",
        "rejected": "HELLO",
        "chosen_probs": 0.6,
        "chosen_probs_win": 0.65,
        "chosen_probs_lose": 0.4,
    },
]


@pytest.fixture()
def policy(tiny_model_dir):
    torch.manual_seed(0)
    return load_policy(tiny_model_dir, training=True)


def test_sequence_logprobs_sum_only_response_tokens(policy):
    model, tokenizer = policy
    pairs = tokenize_pairs(ROWS[:1], tokenizer, max_length=128, max_prompt_length=64)
    batch = collate(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        got = sequence_logprobs(model.eval(), batch)
        # By hand for the chosen sequence: log-softmax at each position predicting a response token.
        p = pairs[0]
        ids = torch.tensor([p.prompt + p.chosen])
        logps = model(input_ids=ids).logits[0].log_softmax(-1)
        expected = sum(logps[t - 1, ids[0, t]] for t in range(len(p.prompt), ids.shape[1]))
    assert got[0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert p.chosen[-1] == tokenizer.eos_token_id  # the end-of-turn token is part of the response


@pytest.mark.parametrize("loss", ["sppo", "sppo_single", "sppo_hard", "dpo"])
def test_one_step_changes_every_parameter_and_lowers_the_loss(policy, loss):
    model, tokenizer = policy
    cfg = TrainConfig(
        loss={"type": loss, "beta": 0.1},
        learning_rate=1e-4,
        optimizer="adamw",
        batch_size=2,
        warmup_ratio=0.0,
        max_length=128,
        max_prompt_length=64,
    )
    pairs = tokenize_pairs(ROWS, tokenizer, cfg.max_length, cfg.max_prompt_length)
    pad = tokenizer.pad_token_id
    ref = reference_logprobs(model, pairs, cfg.batch_size, pad)
    with torch.no_grad():
        loss_before = pair_loss(model, pairs, ref, cfg, batcher_for(model, pad, cfg.shared_prompt))[0].mean().item()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    history = train_policy(model, pairs, cfg, pad, progress=False)

    assert len(history) == 1 and history[0]["loss"] == pytest.approx(loss_before, rel=1e-4)
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged, f"parameters not updated: {unchanged}"
    with torch.no_grad():
        loss_after = pair_loss(model, pairs, ref, cfg, batcher_for(model, pad, cfg.shared_prompt))[0].mean().item()
    assert loss_after < loss_before


def test_a_non_finite_loss_stops_training_naming_the_pair(policy):
    from sppo.train_engine import TrainingDivergedError

    model, tokenizer = policy
    rows = [dict(ROWS[0], prompt_id="p-good"), dict(ROWS[1], prompt_id="p-broken", chosen_probs_win=float("nan"))]
    pairs = tokenize_pairs(rows, tokenizer, max_length=128, max_prompt_length=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(loss={"type": "sppo", "beta": 0.1}, learning_rate=1e-3, batch_size=2)
    with pytest.raises(TrainingDivergedError, match=r"train step 1: the loss is not finite for pair\(s\) p-broken"):
        train_policy(model, pairs, cfg, tokenizer.pad_token_id, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "no update after a NaN loss"


def test_non_finite_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from sppo.models import NonFiniteWeightsError, check_weights_finite

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    check_weights_finite(folder)
    weights = load_file(folder / "model.safetensors")
    name = next(iter(weights))
    weights[name][0] = float("inf")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(NonFiniteWeightsError, match=rf"weight {name} holds NaN or infinity"):
        check_weights_finite(folder)


def test_the_schedule_is_transformers_linear_schedule_with_warmup():
    from transformers import get_linear_schedule_with_warmup

    from sppo.optim import linear_schedule

    for total, ratio in ((64, 0.1), (10, 0.0), (7, 0.5), (3, 0.9)):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        theirs = get_linear_schedule_with_warmup(optimizer, int(np.ceil(total * ratio)), total)
        expected = []
        for _ in range(total):
            expected.append(theirs.get_last_lr()[0])
            optimizer.step()
            theirs.step()
        ours = linear_schedule(total, ratio)
        assert [ours(step) for step in range(total)] == pytest.approx(expected), (total, ratio)
    assert linear_schedule(64, 0.1)(0) == 0.0  # the reference's first step does not move the weights


def test_truncation_follows_the_reference(policy):
    """TRL's tokenize_row (keep_end), as uclaml/SPPO's trainer runs it: the prompt is cut only when prompt + the
    longer response overflow, to its last max_prompt_length tokens; then both responses to max_length -
    max_prompt_length."""
    _, tokenizer = policy
    row = dict(ROWS[0], chosen="a " * 40, rejected="b")
    full = tokenize_pairs([row], tokenizer, max_length=10_000, max_prompt_length=10_000)[0]
    prompt, chosen = len(full.prompt), len(full.chosen)
    assert not full.truncated

    # Room for both: nothing is cut, even with a small max_prompt_length.
    fits = tokenize_pairs([row], tokenizer, max_length=prompt + chosen, max_prompt_length=4)[0]
    assert (fits.prompt, fits.chosen, fits.truncated) == (full.prompt, full.chosen, False)

    # One token too many: the prompt keeps its end; then it fits, and the responses stay whole.
    cut = tokenize_pairs([row], tokenizer, max_length=prompt + chosen - 1, max_prompt_length=prompt - 1)[0]
    assert cut.prompt == full.prompt[1:] and cut.chosen == full.chosen and cut.truncated

    # Still too long after the prompt is cut: both responses are cut to max_length - max_prompt_length.
    tight = tokenize_pairs([row], tokenizer, max_length=prompt + 5, max_prompt_length=prompt)[0]
    assert tight.prompt == full.prompt and tight.chosen == full.chosen[:5] and tight.rejected == full.rejected[:5]


def test_training_runs_without_dropout_like_the_reference():
    """A model whose attention drops out: with train.disable_dropout (the default) a training forward gives what
    the reference pass (eval mode) gives, so the first step's log-ratios are exactly zero."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sppo.training import disable_dropout

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            attention_dropout=0.5,
        )  # fmt: skip
    )
    model.train()
    ids = {"input_ids": torch.randint(1, 64, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    noisy = [model(**ids).logits for _ in range(2)]
    assert not torch.equal(noisy[0], noisy[1]), "the test model must drop out in train mode"
    disable_dropout(model)
    quiet = [model(**ids).logits for _ in range(2)]
    torch.testing.assert_close(quiet[0], quiet[1], rtol=0, atol=0)
    torch.testing.assert_close(quiet[0], model.eval()(**ids).logits, rtol=0, atol=0)
    assert model.config.attention_dropout == 0.0


def test_logprobs_from_the_response_positions_only_match_the_full_forward(policy):
    """sequence_logprobs projects onto the vocabulary only where a response token is predicted; summing the
    full forward's token log-probs over the same positions gives the same numbers."""
    model, tokenizer = policy
    rows = [dict(ROWS[0], chosen="a b c " * 9), ROWS[1]]  # different lengths: padding inside the batch
    pairs = tokenize_pairs(rows, tokenizer, max_length=256, max_prompt_length=128)
    batch = collate(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        model.eval()
        got = sequence_logprobs(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        token_logps = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        expected = (token_logps * batch["response_mask"][:, 1:]).sum(dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_reference_logprobs_do_not_depend_on_the_batching(policy):
    model, tokenizer = policy
    rows = [dict(ROWS[i % 2], chosen=ROWS[i % 2]["chosen"] + " x" * i, prompt_id=f"p{i}") for i in range(5)]
    pairs = tokenize_pairs(rows, tokenizer, max_length=256, max_prompt_length=128)
    one_by_one = reference_logprobs(model, pairs, batch_size=1, pad_id=tokenizer.pad_token_id)
    sorted_batches = reference_logprobs(model, pairs, batch_size=3, pad_id=tokenizer.pad_token_id)
    torch.testing.assert_close(sorted_batches, one_by_one, rtol=1e-5, atol=1e-4)


def test_generation_logprobs_are_the_reference_pass(tiny_model_dir):
    """pi_ref's log-probabilities that the HF engine returns with its samples (finished and cut at the length
    limit alike) are what the reference pass computes for the same sequences."""
    from dataclasses import replace

    from sppo.generation import EngineRequest, Sampling
    from sppo.generators import HFGeneratorConfig

    engine = HFGeneratorConfig().build(EngineRequest(str(tiny_model_dir), 8, 128, 12))
    # A random model almost never ends a reply: an LM-head bias towards end-of-turn makes some end early.
    head = engine.model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[engine.tokenizer.eos_token_id] = 8.0
    engine.model.set_output_embeddings(biased)
    prompts = ["Name a colour.", "Say hi in lowercase.", "Count to three.", "Write a word."]
    # Temperature 1 here keeps both endings with this bias; tests/test_stop_ids_on_cpu.py checks the same at 0.7.
    completions = engine.generate(prompts, Sampling(2, 1.0, 0.95, 12, seed=5, logprobs=True))
    rows = [
        {"prompt_id": f"p{i}", "prompt": p, "chosen": cs[0].text, "rejected": cs[1].text,
         "chosen_token_ids": list(cs[0].token_ids), "rejected_token_ids": list(cs[1].token_ids),
         "chosen_ref_logprob": cs[0].logprob, "rejected_ref_logprob": cs[1].logprob,
         "prompt_token_count": len(engine.tokenizer.apply_chat_template(
             [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=False))}
        for i, (p, cs) in enumerate(zip(prompts, completions, strict=True))
    ]  # fmt: skip
    assert {c.finished for cs in completions for c in cs} == {True, False}, "both kinds of ending are checked"
    pairs = tokenize_pairs(rows, engine.tokenizer, max_length=256, max_prompt_length=128)
    assert all(p.reference is not None for p in pairs)
    model = engine.model
    stored = reference_logprobs(model, pairs, 4, engine.tokenizer.pad_token_id)
    computed = reference_logprobs(model, [replace(p, reference=None) for p in pairs], 4, engine.tokenizer.pad_token_id)
    torch.testing.assert_close(stored, computed, rtol=0, atol=1e-3)


def _pairs_of_lengths(lengths: list[int]) -> list:
    from sppo.pair_batches import TokenizedPair

    return [TokenizedPair(f"p{i}", [1] * 10, [2] * n, [3] * (n // 2 + 1), {}) for i, n in enumerate(lengths)]


def test_length_grouped_steps_take_every_pair_once_and_pad_less():
    import random

    from sppo.pair_batches import pair_length
    from sppo.training import epoch_steps

    rng = random.Random(5)
    pairs = _pairs_of_lengths([rng.randint(3, 128) for _ in range(301)])

    def padding(steps):  # pad tokens of the 2 x pairs sequences each step's batch holds
        return sum(
            2 * len(step) * max(map(pair_length, group)) - sum(2 * pair_length(p) for p in group)
            for step in steps
            for group in [[pairs[i] for i in step]]
        )

    grouped = epoch_steps(pairs, 2, random.Random(0), group_by_length=True)
    plain = epoch_steps(pairs, 2, random.Random(0), group_by_length=False)
    assert sorted(i for step in grouped for i in step) == list(range(len(pairs)))
    assert sum(len(step) == 1 for step in grouped) == 1  # 301 pairs: one short step, as without grouping
    assert padding(grouped) < 0.2 * padding(plain)
    # Steps come in random order, not short first or long first.
    step_lengths = [max(pair_length(pairs[i]) for i in step) for step in grouped]
    assert step_lengths not in (sorted(step_lengths), sorted(step_lengths, reverse=True))
    assert grouped == epoch_steps(pairs, 2, random.Random(0), group_by_length=True)  # the seed decides


def test_without_grouping_the_steps_are_one_shuffle_cut_in_order():
    import random

    from sppo.training import epoch_steps

    order = list(range(9))
    random.Random(3).shuffle(order)
    steps = epoch_steps(_pairs_of_lengths([5] * 9), 4, random.Random(3), group_by_length=False)
    assert steps == [order[0:4], order[4:8], order[8:9]]
