"""Adapters through peft on a tiny random model: pi_ref is the policy with its adapter switched off (equal to a
separate frozen copy of pi_t), only the adapter trains, and the train stage commits the merged policy with the
adapter beside it in model/adapter/."""

import pytest
import torch
from peft import PeftModel

from sppo.artifacts import ADAPTER_FOLDER, PAIRS, TRAIN_FILE, write_rows
from sppo.config import RecipeConfig, TrainConfig, load_recipe
from sppo.logprobs import adapter_off, reference_logprobs, sequence_logprobs
from sppo.models import load_policy
from sppo.optim import make_optimizer
from sppo.pair_batches import collate
from sppo.pair_tokens import tokenize_pairs
from sppo.stages.base import prepare_base
from sppo.stages.train import train
from sppo.store import commit_stage
from sppo.training import train_policy

from .test_training_on_cpu import ROWS

LORA = {"type": "lora", "r": 4, "alpha": 8}


def _train_config(**changes) -> TrainConfig:
    fields = dict(
        adapter=LORA,
        loss={"type": "sppo", "beta": 0.1},
        learning_rate=1e-2,
        optimizer="adamw",
        warmup_ratio=0.0,
        batch_size=1,  # two steps over ROWS: the first moves only B (A's gradient is 0 while B is), the second A too
        max_length=128,
        max_prompt_length=64,
    )
    return TrainConfig(**(fields | changes))


def _logprobs(model, pairs, pad_id) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logprobs(model.eval(), collate(pairs, pad_id))


def test_the_recipe_names_an_adapter_and_none_is_the_default():
    assert load_recipe(None).train.adapter.type == "none"
    lora = load_recipe(None, ["train.adapter={type: lora, r: 8, target_modules: [q_proj, v_proj]}"]).train.adapter
    assert (lora.type, lora.r, lora.alpha, lora.target_modules) == ("lora", 8, 32.0, ["q_proj", "v_proj"])
    assert load_recipe(None, ["train.adapter=lora"]).train.adapter.target_modules == "all-linear"


def test_the_reference_is_the_base_with_the_adapter_off_and_only_the_adapter_trains(tiny_model_dir):
    cfg = _train_config()
    frozen, tokenizer = load_policy(tiny_model_dir)  # a separate copy of pi_t: what the adapter must not need
    model, _ = load_policy(tiny_model_dir, training=True)
    model = cfg.adapter.wrap(model, cfg.seed)
    assert isinstance(model, PeftModel)
    pad = tokenizer.pad_token_id
    pairs = tokenize_pairs(ROWS, tokenizer, cfg.max_length, cfg.max_prompt_length)
    expected = reference_logprobs(frozen, pairs, 4, pad)
    assert torch.equal(reference_logprobs(model, pairs, 4, pad), expected)

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert {id(p) for g in make_optimizer(model, cfg).param_groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    history = train_policy(model, pairs, cfg, pad, progress=False)

    assert len(history) == 2
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable, (
        f"frozen weights moved: {changed - trainable}; adapter weights not: {trainable - changed}"
    )
    assert torch.equal(reference_logprobs(model, pairs, 4, pad), expected)  # pi_ref did not move
    with adapter_off(model):
        assert torch.equal(_logprobs(model, pairs, pad), _logprobs(frozen, pairs, pad))
    trained = _logprobs(model, pairs, pad)
    assert (trained - _logprobs(frozen, pairs, pad)).abs().min() > 1e-3, "the adapter changed nothing"


def test_training_refuses_a_model_without_the_adapter_the_recipe_names(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir, training=True)
    pairs = tokenize_pairs(ROWS, tokenizer, 128, 64)
    with pytest.raises(ValueError, match="train.adapter is lora but the model has none"):
        train_policy(model, pairs, _train_config(), tokenizer.pad_token_id, progress=False)


def _commit_dataset(store, url: str) -> None:
    def produce(tmp, _):
        write_rows([dict(r, prompt_id=f"p{i}") for i, r in enumerate(ROWS)], PAIRS, tmp / TRAIN_FILE)
        return {"rows": len(ROWS)}

    commit_stage(store, url, "dataset", "test", {}, produce)


def test_the_train_stage_commits_the_merged_policy_and_the_adapter(tiny_model_dir, tmp_path):
    root = tmp_path / "store"
    full = RecipeConfig(
        store=str(root), precision="fp32", model={"base": str(tiny_model_dir)}, train=_train_config(adapter="none")
    )
    lora = full.model_copy(update={"train": _train_config()})
    store = full.open_store()
    base, dataset = f"{root}/run/iter-000/model", f"{root}/run/iter-001/dataset"
    prepare_base(full, base)
    _commit_dataset(store, dataset)

    committed = train(lora, dataset, base, f"{root}/run/iter-001/model")
    whole = train(full, dataset, base, f"{root}/full/iter-001/model")

    adapter_files = {name for name in committed.outputs if name.startswith(f"{ADAPTER_FOLDER}/")}
    assert {f"{ADAPTER_FOLDER}/adapter_config.json", f"{ADAPTER_FOLDER}/adapter_model.safetensors"} <= adapter_files
    assert set(committed.outputs) - adapter_files == set(whole.outputs), "model/ holds what full training commits"
    assert committed.info["adapter"] == "lora" and whole.info["adapter"] == "none"

    # What the next iteration and every later stage load: a plain HF folder, the adapter merged in.
    folder = store.local_copy(f"{root}/run/iter-001/model")
    merged, tokenizer = load_policy(folder)
    assert not isinstance(merged, PeftModel) and not any("lora_" in n for n, _ in merged.named_parameters())
    pairs = tokenize_pairs(ROWS, tokenizer, 128, 64)
    pad = tokenizer.pad_token_id
    # The adapter as peft saves it, applied to pi_t, gives the merged policy's log-probs (to float rounding).
    pi_t, _ = load_policy(store.local_copy(base))
    base_logprobs = _logprobs(pi_t, pairs, pad)
    with_adapter = PeftModel.from_pretrained(pi_t, folder / ADAPTER_FOLDER)
    adapted = _logprobs(with_adapter, pairs, pad)
    assert (adapted - base_logprobs).abs().min() > 1e-3, "training through the adapter changed nothing"
    assert _logprobs(merged, pairs, pad) == pytest.approx(adapted, abs=1e-4)


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_gradient_checkpointing_trains_to_the_same_weights(tiny_model_dir, adapter):
    """Recomputing activations in the backward changes memory, not numbers (so it is not in the fingerprint)."""
    trained = []
    for checkpointing in (False, True):
        cfg = _train_config(adapter=adapter, gradient_checkpointing=checkpointing)
        model, tokenizer = load_policy(tiny_model_dir, training=True)
        model = cfg.adapter.wrap(model, cfg.seed)
        forwards = []
        model.get_decoder().layers[0].self_attn.register_forward_hook(lambda *_, seen=forwards: seen.append(1))
        pairs = tokenize_pairs(ROWS, tokenizer, cfg.max_length, cfg.max_prompt_length)
        history = train_policy(model, pairs, cfg, tokenizer.pad_token_id, progress=False)
        # One reference batch and two steps; recomputing runs each step's forward again in its backward.
        assert len(forwards) == (5 if checkpointing else 3)
        trained.append((history, {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}))
    (plain, plain_weights), (recomputed, recomputed_weights) = trained
    assert [h["loss"] for h in recomputed] == pytest.approx([h["loss"] for h in plain], rel=1e-6)
    for name, weight in plain_weights.items():
        assert torch.allclose(recomputed_weights[name], weight, rtol=0, atol=1e-6), name
