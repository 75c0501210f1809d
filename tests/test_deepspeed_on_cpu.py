"""DeepSpeed on CPU: the recipe fills the JSON config, and a two-process ZeRO-3 job (gloo) runs the
single-process training loop to the same losses and weights, with and without a LoRA adapter.

The two-process test is marked `distributed` (`make test-distributed`): ~45 s warm, ~2.5 min on a fresh
checkout where DeepSpeed JIT-compiles its helper ops into .cache/torch_extensions first."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from sppo.artifacts import ADAPTER_FOLDER, PAIRS, TRAIN_FILE, write_rows
from sppo.config import ConfigError, DeepSpeedConfig, RecipeConfig, TrainConfig, load_recipe
from sppo.deepspeed_engine import deepspeed_config
from sppo.models import load_policy
from sppo.pair_tokens import tokenize_pairs
from sppo.precision import resolve_precision
from sppo.train_distributed import _stream, job_failure, launch
from sppo.training import train_policy

WORDS = "blue red green hi hello there turtles colour lowercase yes no maybe always never".split()


def _rows(n: int) -> list[dict]:
    rng = random.Random(0)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [
        {
            "prompt_id": f"p{i}",
            "prompt": text(4),
            "chosen": text(rng.randint(2, 6)),
            "rejected": text(rng.randint(2, 9)),
            "chosen_probs": rng.uniform(0.5, 0.9),
            "chosen_probs_win": rng.uniform(0.5, 0.9),
            "chosen_probs_lose": rng.uniform(0.1, 0.5),
        }
        for i in range(n)
    ]


def _train_config(**changes) -> TrainConfig:
    fields = dict(
        loss={"type": "sppo", "beta": 0.1},
        learning_rate=1e-3,
        optimizer="adamw",
        warmup_ratio=0.0,
        batch_size=1,
        max_length=64,
        max_prompt_length=32,
        seed=0,
    )
    return TrainConfig(**(fields | changes))


def test_recipe_fills_the_auto_fields_and_chooses_stage_and_offload():
    cfg = _train_config(grad_accum=3, processes=2, deepspeed=DeepSpeedConfig(stage=2, offload_optimizer=True))
    config = deepspeed_config(cfg, world_size=2, precision=resolve_precision("bf16"))
    assert config["train_batch_size"] == 1 * 3 * 2
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (1, 3)
    assert config["gradient_clipping"] == cfg.max_grad_norm and config["bf16"]["enabled"] is False
    zero = config["zero_optimization"]
    assert zero["stage"] == 2 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "none"  # parameter offload exists only in ZeRO-3
    assert "auto" not in str(config)


def test_several_processes_need_a_deepspeed_section():
    with pytest.raises(ConfigError, match="processes=2 needs a `deepspeed:` section"):
        load_recipe(None, ["train.processes=2"])
    assert load_recipe(None, ["train.processes=2", "train.deepspeed.stage=3"]).train.deepspeed.stage == 3


@pytest.mark.distributed
@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_two_process_zero3_matches_one_process(tiny_model_dir, tmp_path, adapter):
    rows = _rows(16)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    write_rows(rows, PAIRS, dataset / TRAIN_FILE)

    # One process, in process: global batch 1 x 4 x 1 = 4 pairs, 4 optimizer steps.
    single = _train_config(grad_accum=4, adapter=adapter)
    model, tokenizer = load_policy(tiny_model_dir, training=True)
    model = single.adapter.wrap(model, single.seed)
    pairs = tokenize_pairs(rows, tokenizer, single.max_length, single.max_prompt_length)
    expected = train_policy(model, pairs, single, tokenizer.pad_token_id, progress=False)
    assert len(expected) == 4
    if adapter != "none":  # the job commits the merged policy, its adapter beside it
        model = model.merge_and_unload()

    # Two ranks under ZeRO-3, launched as the train stage launches them: global batch 1 x 2 x 2 = 4 pairs.
    # With LoRA the ranks also recompute activations, as configs/llama-3-8b-instruct-lora.yaml trains: same numbers.
    double = _train_config(
        grad_accum=2,
        processes=2,
        deepspeed=DeepSpeedConfig(stage=3),
        adapter=adapter,
        gradient_checkpointing=adapter != "none",
    )
    out = tmp_path / "model"
    got = launch(RecipeConfig(threads=2, precision="fp32", train=double), dataset, tiny_model_dir, out)

    # Same pairs, batches and fp32 math; only the order of float sums differs (gradients reduced across
    # ranks, ZeRO's flat partitioned buffers, micro-batch padding). That is ~1e-7 relative per step; Adam
    # at lr 1e-3 carries it into the next steps' weights, so 1e-4 relative leaves room for that growth
    # while a mistake in batch splitting, loss weighting or the schedule moves losses by percent.
    assert [h["lr"] for h in got] == pytest.approx([h["lr"] for h in expected], rel=1e-6)
    assert [h["loss"] for h in got] == pytest.approx([h["loss"] for h in expected], rel=1e-4)
    assert [h["logr_chosen"] for h in got] == pytest.approx([h["logr_chosen"] for h in expected], rel=1e-3, abs=1e-5)
    assert expected[-1]["loss"] < expected[0]["loss"]
    assert (out / ADAPTER_FOLDER / "adapter_model.safetensors").is_file() == (adapter != "none")

    # The gathered ZeRO-3 model is a plain HF folder with the single-process run's weights. Adam divides each
    # gradient by its own running scale, so where a gradient is near zero the float-order noise above can move
    # an isolated weight by a small fraction of lr (seen: 1 of 3M embedding weights by 2e-5 at lr 1e-3); a
    # mistake moves most weights by about lr.
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    trained = dict(model.named_parameters())
    for name, param in reloaded.named_parameters():
        diff = (param - trained[name]).abs()
        assert diff.max() < 1e-4 and (diff > 1e-5).float().mean() < 1e-3, (name, diff.max(), (diff > 1e-5).sum())


def test_training_job_output_reaches_the_log_line_by_line(caplog):
    import logging
    import sys

    script = (
        "import sys; print('loading the model'); print('sppo-train-progress: 0/2'); "
        "print('sppo-train-progress: 2/2'); print('Traceback: ...', file=sys.stderr); "
        "print('sppo-train-mistake: ValueError: train.deepspeed.config: x.json is missing', file=sys.stderr); "
        "sys.exit(1)"
    )
    steps = []
    env = {"PYTHONUNBUFFERED": "1"}  # as launch sets it: lines in the order they were printed
    with caplog.at_level(logging.INFO, logger="sppo.train_distributed"):
        code, mistake, last = _stream([sys.executable, "-c", script], env, lambda *step: steps.append(step))
    assert code == 1 and steps == [(0, 2), (2, 2)]
    assert mistake == "ValueError: train.deepspeed.config: x.json is missing"
    logged = [r.getMessage() for r in caplog.records if r.name == "sppo.train_distributed"]
    assert logged[0] == "loading the model" and "Traceback: ..." in logged
    assert "sppo-train-progress: 0/2" not in last  # progress lines are not the job's last words


def test_a_mistake_in_the_job_is_a_value_error_and_a_crash_is_not():
    assert job_failure(0, None, []) is None
    mistake = job_failure(1, "ValueError: bad field", ["..."])  # torchrun exits 1 whatever its ranks did
    assert isinstance(mistake, ValueError) and "bad field" in str(mistake)
    assert isinstance(job_failure(3, None, []), ValueError)  # the documented exit code alone
    crash = job_failure(-9, None, ["rank 0 killed"])
    assert type(crash) is RuntimeError and "exit -9" in str(crash) and "rank 0 killed" in str(crash)


@pytest.mark.distributed
def test_a_missing_deepspeed_config_fails_the_launched_job_as_a_mistake(tiny_model_dir, tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    write_rows(_rows(4), PAIRS, dataset / TRAIN_FILE)
    recipe = RecipeConfig(train=_train_config(deepspeed=DeepSpeedConfig(config="configs/deepspeed/typo.json")))
    with pytest.raises(
        ValueError, match=r"mistake in the recipe or data: (Config|Value)Error: train.deepspeed.config: "
    ):
        launch(recipe, dataset, tiny_model_dir, tmp_path / "out")
