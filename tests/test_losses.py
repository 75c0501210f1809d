"""Preference losses: each type against numbers worked out by hand, and "sppo_hard" against TRL's DPOTrainer."""

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from sppo.logprobs import sequence_logprobs
from sppo.losses import LossConfig
from sppo.pair_batches import collate
from sppo.pair_tokens import tokenize_pairs

LOSS = TypeAdapter(LossConfig)
LOSS_TYPES = ("sppo", "sppo_single", "sppo_hard", "dpo")


def preference_loss(name: str, logr_chosen, logr_rejected, beta: float, **values) -> torch.Tensor:
    """The loss a recipe's `train.loss: {type: name, beta: beta}` builds, on per-pair `values`."""
    loss = LOSS.validate_python({"type": name, "beta": beta})
    assert set(loss.needs) <= set(values), f"{name} needs {loss.needs}"
    return loss(logr_chosen, logr_rejected, values)


# Shared inputs for the squared losses: beta = 0.5, so eta = 1/beta = 2.
BETA = 0.5
LOGR_CHOSEN = torch.tensor([0.5, -1.0, 2.0])
LOGR_REJECTED = torch.tensor([-0.5, 1.5, 0.25])


def test_sppo_hard_by_hand():
    # (logr_w - eta/2)^2 + (logr_l + eta/2)^2 with eta/2 = 1, no 1/2 factor:
    #   pair 0: (0.5 - 1)^2 + (-0.5 + 1)^2 = 0.25 + 0.25   = 0.5
    #   pair 1: (-1 - 1)^2  + (1.5 + 1)^2  = 4 + 6.25      = 10.25
    #   pair 2: (2 - 1)^2   + (0.25 + 1)^2 = 1 + 1.5625    = 2.5625
    got = preference_loss("sppo_hard", LOGR_CHOSEN, LOGR_REJECTED, BETA)
    torch.testing.assert_close(got, torch.tensor([0.5, 10.25, 2.5625]))


def test_sppo_by_hand():
    # ((logr_w - eta*(w_w - 1/2))^2 + (logr_l - eta*(w_l - 1/2))^2) / 2, eta = 2.
    # Targets: winner 2*([0.75, 0.6, 0.5] - 0.5) = [0.5, 0.2, 0]; loser 2*([0.25, 0.3, 0.5] - 0.5) = [-0.5, -0.4, 0].
    #   pair 0: ((0.5 - 0.5)^2 + (-0.5 + 0.5)^2) / 2 = 0
    #   pair 1: ((-1 - 0.2)^2  + (1.5 + 0.4)^2)  / 2 = (1.44 + 3.61) / 2 = 2.525
    #   pair 2: ((2 - 0)^2     + (0.25 - 0)^2)   / 2 = (4 + 0.0625) / 2  = 2.03125
    got = preference_loss(
        "sppo",
        LOGR_CHOSEN,
        LOGR_REJECTED,
        BETA,
        chosen_probs=torch.tensor([0.1, 0.2, 0.3]),  # ignored by "sppo": only the win rates count
        chosen_probs_win=torch.tensor([0.75, 0.6, 0.5]),
        chosen_probs_lose=torch.tensor([0.25, 0.3, 0.5]),
    )
    torch.testing.assert_close(got, torch.tensor([0.0, 2.525, 2.03125]))


def test_sppo_single_by_hand():
    # ((logr_w - eta*(P - 1/2))^2 + (logr_l + eta*(P - 1/2))^2) / 2, eta = 2.
    # eta*(P - 1/2) for P = [0.9, 0.5, 0.25]: [0.8, 0, -0.5].
    #   pair 0: ((0.5 - 0.8)^2 + (-0.5 + 0.8)^2) / 2 = (0.09 + 0.09) / 2   = 0.09
    #   pair 1: ((-1 - 0)^2    + (1.5 + 0)^2)    / 2 = (1 + 2.25) / 2      = 1.625
    #   pair 2: ((2 + 0.5)^2   + (0.25 - 0.5)^2) / 2 = (6.25 + 0.0625) / 2 = 3.15625
    got = preference_loss(
        "sppo_single",
        LOGR_CHOSEN,
        LOGR_REJECTED,
        BETA,
        chosen_probs=torch.tensor([0.9, 0.5, 0.25]),
        chosen_probs_win=torch.tensor([0.0, 0.0, 0.0]),  # ignored by "sppo_single"
        chosen_probs_lose=torch.tensor([1.0, 1.0, 1.0]),
    )
    torch.testing.assert_close(got, torch.tensor([0.09, 1.625, 3.15625]))


def test_dpo_by_hand():
    # -log sigmoid(beta * (logr_w - logr_l)) = log(1 + exp(-beta * margin)), beta = 0.1.
    # Margins: 3 - (-7) = 10, -2 - 3 = -5, 1 - 1 = 0, so beta * margin = 1, -0.5, 0:
    #   log(1 + e^-1) = 0.3132617, log(1 + e^0.5) = 0.9740770, log 2 = 0.6931472
    got = preference_loss("dpo", torch.tensor([3.0, -2.0, 1.0]), torch.tensor([-7.0, 3.0, 1.0]), 0.1)
    torch.testing.assert_close(got, torch.tensor([0.3132617, 0.9740770, 0.6931472]))


def test_sppo_with_hard_win_rates_is_half_of_sppo_hard():
    # With w_w = 1 and w_l = 0 the soft targets become +-eta/2: "sppo" is then "sppo_hard" with its 1/2 factor.
    gen = torch.Generator().manual_seed(0)
    logr_c, logr_r = torch.randn(5, generator=gen) * 3, torch.randn(5, generator=gen) * 3
    for beta in (0.1, 0.5, 2.0):
        hard = preference_loss("sppo_hard", logr_c, logr_r, beta)
        soft = preference_loss(
            "sppo", logr_c, logr_r, beta, chosen_probs_win=torch.ones(5), chosen_probs_lose=torch.zeros(5)
        )
        torch.testing.assert_close(soft, hard / 2)


def test_unknown_loss_type_names_the_known_ones():
    with pytest.raises(ValidationError, match="'ipo'") as err:
        preference_loss("ipo", LOGR_CHOSEN, LOGR_REJECTED, BETA)
    for name in LOSS_TYPES:
        assert name in str(err.value)


def test_a_loss_is_named_by_its_type_alone_in_a_recipe():
    assert LOSS.validate_python("dpo") == LOSS.validate_python({"type": "dpo"})


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sppo_hard_matches_trl_dpo_trainer(tiny_model_dir, tmp_path, one_thread):
    """Same examples, same models -> TRL 1.16 DPOTrainer(loss_type="sppo_hard") and our pipeline give the same loss.

    What is compared:
    1. Tokenization: TRL's dataset preparation (plain-text rows; the prompt is our chat-templated prompt text, TRL
       appends EOS to the responses) yields exactly our `tokenize_pairs` ids, and TRL's collator yields exactly our
       `collate` batch (chosen rows then rejected rows, right padding; completion_mask == response_mask).
    2. Log-probs: TRL's per-sequence summed completion log-probs (`compute_ref_log_probs`, which runs its fused LM
       head) equal our `sequence_logprobs`, for both the policy and the reference.
    3. Loss: `DPOTrainer.compute_loss` (policy forward + forward of an explicit, perturbed `ref_model`, then its
       "sppo_hard" branch, averaged) equals the mean of our `preference_loss("sppo_hard", ...)` on our log-ratios.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    beta = 0.5
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a different reference, so log-ratios are far from zero
        for p in reference.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)

    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I like turtles a lot, really."},
        {"prompt": "Say hi in lowercase.", "chosen": "hi there", "rejected": "HELLO"},
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "Twenty-two, probably."},
    ]
    ours = tokenize_pairs(
        [{**r, "chosen_probs": 1.0, "chosen_probs_win": 1.0, "chosen_probs_lose": 0.0} for r in rows],
        tokenizer,
        max_length=256,
        max_prompt_length=256,
    )
    prompt_text = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}], add_generation_prompt=True, tokenize=False
        )
        for r in rows
    ]
    dataset = Dataset.from_list([{**r, "prompt": text} for r, text in zip(rows, prompt_text, strict=True)])
    args = DPOConfig(
        output_dir=str(tmp_path),
        loss_type="sppo_hard",
        beta=beta,
        max_length=None,
        per_device_train_batch_size=len(rows),
        bf16=False,  # TRL defaults to bf16=True (autocast even on CPU) and gradient checkpointing on
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        push_to_hub=False,
    )
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer
    )

    # 1. Same tokens.
    prepared = trainer.train_dataset
    assert [list(x) for x in prepared["prompt_ids"]] == [p.prompt for p in ours]
    assert [list(x) for x in prepared["chosen_ids"]] == [p.chosen for p in ours]
    assert [list(x) for x in prepared["rejected_ids"]] == [p.rejected for p in ours]
    trl_batch = trainer.data_collator([prepared[i] for i in range(len(rows))])
    batch = collate(ours, tokenizer.pad_token_id)
    assert torch.equal(trl_batch["input_ids"], batch["input_ids"])
    assert torch.equal(trl_batch["attention_mask"], batch["attention_mask"])
    assert torch.equal(trl_batch["completion_mask"].bool(), batch["response_mask"])

    with torch.no_grad():
        # 2. Same summed completion log-probs.
        # (DPOTrainer patched both models' forward; without fused_lm_head=True it is the original forward.)
        logps = sequence_logprobs(policy, batch)
        ref_logps = sequence_logprobs(reference, batch)
        trl_logps = torch.cat(trainer.compute_ref_log_probs(policy, trl_batch))
        trl_ref_logps = torch.cat(trainer.compute_ref_log_probs(trainer.ref_model, trl_batch))
        torch.testing.assert_close(trl_logps, logps, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(trl_ref_logps, ref_logps, rtol=1e-4, atol=1e-4)

        # 3. Same loss.
        logr_chosen, logr_rejected = (logps - ref_logps).chunk(2)
        assert logr_chosen.abs().min() > 0.1 and logr_rejected.abs().min() > 0.1
        expected = preference_loss("sppo_hard", logr_chosen, logr_rejected, beta).mean()
        trl_loss = trainer.compute_loss(trainer.model, trl_batch)
    torch.testing.assert_close(trl_loss, expected, rtol=1e-4, atol=1e-6)
