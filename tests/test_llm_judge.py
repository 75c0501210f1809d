"""The llm judge on a tiny random Llama with SmolLM2's tokenizer, built locally, through the HF engine: the engine's
next-token log-probabilities against a direct forward, both orders of every pair, and a recipe's rank stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sppo.generation import chat_prompt_ids
from sppo.generators import HFGeneratorConfig
from sppo.judges import LLMJudgeConfig
from sppo.prompts import PromptRecord
from sppo.runner import EngineShape

from .conftest import REPO
from .ray_cluster import generate_and_rank, stage_recipe

PROMPTS = [
    PromptRecord(id="poem", prompt="Write a short poem about the sea."),
    PromptRecord(id="sky", prompt="Explain why the sky is blue in simple words."),
]
RESPONSES = [
    ["The sea is wide and the wind is cold.", "Sorry, I cannot help with that.", "Waves"],
    ["Light scatters in the air, and blue light scatters the most.", "Because it is.", "Blue.", ""],
]


@pytest.fixture(scope="module")
def judge_model_dir(tmp_path_factory):
    """configs/tiny-llama.json with weights 5x the usual spread (initializer_range 0.1), so its verdicts vary
    with the responses by a few percent rather than by 1e-4."""
    from sppo.models import prepare_base_model

    folder = tmp_path_factory.mktemp("llm-judge")
    config = json.loads((REPO / "configs" / "tiny-llama.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "initializer_range": 0.1}))
    prepare_base_model(f"random:{folder / 'config.json'}", folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def judge(judge_model_dir):
    return LLMJudgeConfig(model=str(judge_model_dir), batch_size=4).build()


def test_hf_next_token_logprobs_match_a_direct_forward(judge):
    engine, model = judge.engine, judge.engine.model
    texts = ["Hi.", "Write a short poem about the sea and the stars.", "Why?", "List three red fruits, please.", "x"]
    prompts = [chat_prompt_ids(engine.tokenizer, t) for t in texts]
    candidates = [*judge.verdict_ids, 0, 1234, len(engine.tokenizer) - 1]  # rare tokens too: no top-k here
    got = engine.next_token_logprobs(prompts, candidates)  # batches of 4, left-padded
    assert got.shape == (5, 5) and got.dtype == np.float64
    with torch.inference_mode():
        for ids, row in zip(prompts, got, strict=True):
            direct = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)[candidates]
            np.testing.assert_allclose(row, direct.numpy(), atol=1e-5)
    assert engine.next_token_logprobs([], candidates).shape == (0, 5)


def test_judgements_are_preference_matrices(judge):
    judgements = judge.judge(PROMPTS, RESPONSES)
    assert judge.name == "llm" and len(judgements) == 2
    for j, responses in zip(judgements, RESPONSES, strict=True):
        k = len(responses)
        assert j.scores.shape == (k,) and j.matrix.shape == (k, k)
        np.testing.assert_allclose(j.matrix + j.matrix.T, 1.0, atol=1e-12)
        np.testing.assert_array_equal(np.diag(j.matrix), 0.5)
        assert ((j.matrix > 0) & (j.matrix < 1)).all()
        np.testing.assert_allclose(j.scores, j.matrix.mean(axis=1))
    assert max(np.abs(j.matrix - 0.5).max() for j in judgements) > 0.005  # the random judge tells them apart


def test_each_preference_averages_both_orders(judge):
    prompt, responses = PROMPTS[1], RESPONSES[1]
    matrix = judge.judge([prompt], [responses])[0].matrix

    def first_wins(a: str, b: str) -> float:
        ids = judge.judge_prompt_ids(prompt, a, b)
        assert judge.engine.tokenizer.decode(ids).endswith("Answer with A or B.<|im_end|>\n<|im_start|>assistant\n")
        log_a, log_b = judge.engine.next_token_logprobs([ids], judge.verdict_ids)[0]
        return np.exp(log_a) / (np.exp(log_a) + np.exp(log_b))

    for i in range(len(responses)):
        for j in range(len(responses)):
            if i != j:
                by_hand = (first_wins(responses[i], responses[j]) + 1 - first_wins(responses[j], responses[i])) / 2
                assert matrix[i, j] == pytest.approx(by_hand, abs=1e-6)


def test_swapping_two_responses_swaps_their_rows_and_columns(judge):
    responses = RESPONSES[1]
    swapped = [responses[2], responses[1], responses[0], responses[3]]
    m = judge.judge([PROMPTS[1]], [responses])[0].matrix
    s = judge.judge([PROMPTS[1]], [swapped])[0].matrix
    order = [2, 1, 0, 3]
    np.testing.assert_allclose(s, m[np.ix_(order, order)], atol=1e-6)


def test_verdicts_must_be_distinct_single_tokens(judge_model_dir):
    with pytest.raises(ValueError, match=r"judge\.verdicts: 'Response A' is 2 tokens"):
        LLMJudgeConfig(model=str(judge_model_dir), verdicts=("Response A", "B")).build()
    with pytest.raises(ValueError, match="are the same token"):
        LLMJudgeConfig(model=str(judge_model_dir), verdicts=("A", "A")).build()


def test_the_template_must_name_its_three_fields():
    with pytest.raises(ValidationError, match="lacks {response_b}"):
        LLMJudgeConfig(model="m", template="{instruction} {response_a}")
    with pytest.raises(ValidationError, match="exactly {instruction}"):
        LLMJudgeConfig(model="m", template="{instruction} {response_a} {response_b} {score}")


def test_an_overlong_judge_prompt_names_the_prompt_and_the_field(judge_model_dir):
    short = LLMJudgeConfig(model=str(judge_model_dir), max_prompt_tokens=64).build()
    with pytest.raises(ValueError, match=r"prompt 'poem' is \d+ tokens, over judge.max_prompt_tokens=64"):
        short.judge(PROMPTS[:1], RESPONSES[:1])


def test_check_and_engine_shape(tmp_path):
    with pytest.raises(ValueError, match=r"^judge\.model: .*no-such-judge does not exist"):
        LLMJudgeConfig(model=str(tmp_path / "no-such-judge")).check("judge")
    LLMJudgeConfig(model="owner/some-instruct-model").check("judge")  # a hub id: checked when loaded
    assert LLMJudgeConfig(model="m").engine_shape(2, 1) == EngineShape(cpus=2, gpus=1)
    tensor_parallel = LLMJudgeConfig(model="m", engine={"type": "vllm", "tensor_parallel_size": 2})
    assert tensor_parallel.engine_shape(2, 1) == EngineShape(cpus=2, gpus=2, tensor_parallel=2)
    assert LLMJudgeConfig(model="m").engine == HFGeneratorConfig()


def test_a_recipe_ranks_with_it(tiny_model_dir, judge_model_dir, judge, tmp_path):
    extra = ["judge.type=llm", f"judge.model={judge_model_dir}"]
    recipe = stage_recipe(tmp_path / "store", tiny_model_dir, extra=extra)
    assert recipe.judge == LLMJudgeConfig(model=str(judge_model_dir), batch_size=2)
    generations, preferences = generate_and_rank(recipe, "llm-judge")
    assert [p["prompt_id"] for p in preferences] == [g["prompt_id"] for g in generations]
    for row in preferences[:3]:
        expected = judge.judge([PromptRecord(row["prompt_id"], row["prompt"])], [row["responses"]])[0]
        np.testing.assert_allclose(row["matrix"], expected.matrix, atol=1e-6)
        np.testing.assert_allclose(row["scores"], expected.scores, atol=1e-6)
