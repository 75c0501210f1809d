"""The reward_model judge on a tiny random LlamaForSequenceClassification with SmolLM2's tokenizer, built locally:
rewards against the model called by hand, batching, a multi-output head, and a recipe's rank stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppo.config import load_recipe
from sppo.judges import RewardModelJudgeConfig
from sppo.prompts import PromptRecord
from sppo.runner import EngineShape
from sppo.testing import build_tiny_reward_model

from .conftest import REPO, copy_without_chat_template
from .ray_cluster import generate_and_rank, stage_recipe

PROMPTS = [
    PromptRecord(id="poem", prompt="Write a short poem about the sea."),
    PromptRecord(id="sky", prompt="Explain why the sky is blue in simple words."),
]
RESPONSES = [
    ["The sea is wide and the wind is cold.", "Sorry, I cannot help with that.", "Waves", ""],
    ["Light scatters in the air, and blue light scatters the most.", "Because it is.", "Blue.", "The sky is blue."],
]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    return build_tiny_reward_model(tmp_path_factory.mktemp("reward-model"))


def _by_hand(model_dir, output_index: int = 0) -> list[np.ndarray]:
    """Each response's reward from the model itself, one unpadded sequence per forward."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    rewards = []
    for prompt, responses in zip(PROMPTS, RESPONSES, strict=True):
        row = []
        for response in responses:
            chat = [{"role": "user", "content": prompt.prompt}, {"role": "assistant", "content": response}]
            ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)
            with torch.inference_mode():
                row.append(model(torch.tensor([ids])).logits[0, output_index].item())
        rewards.append(np.array(row))
    return rewards


def test_preferences_are_sigmoids_of_the_reward_differences(reward_model_dir):
    judgements = RewardModelJudgeConfig(model=str(reward_model_dir), batch_size=3).build().judge(PROMPTS, RESPONSES)
    for judgement, rewards in zip(judgements, _by_hand(reward_model_dir), strict=True):
        np.testing.assert_allclose(judgement.scores, rewards, atol=1e-5)
        expected = 1 / (1 + np.exp(-(rewards[:, None] - rewards[None, :])))
        np.testing.assert_allclose(judgement.matrix, expected, atol=1e-6)
        np.testing.assert_allclose(judgement.matrix + judgement.matrix.T, 1.0, atol=1e-12)
        np.testing.assert_array_equal(np.diag(judgement.matrix), 0.5)
    # The random head tells responses apart: not every preference is ~1/2.
    assert max(np.abs(j.matrix - 0.5).max() for j in judgements) > 0.05


def test_batching_does_not_change_the_rewards(reward_model_dir):
    one = RewardModelJudgeConfig(model=str(reward_model_dir), batch_size=1).build().judge(PROMPTS, RESPONSES)
    three = RewardModelJudgeConfig(model=str(reward_model_dir), batch_size=3).build().judge(PROMPTS, RESPONSES)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_a_multi_output_head_is_read_at_output_index(tmp_path):
    model_dir = build_tiny_reward_model(tmp_path / "rm3", num_labels=3)
    judgements = RewardModelJudgeConfig(model=str(model_dir), output_index=2).build().judge(PROMPTS, RESPONSES)
    for judgement, rewards in zip(judgements, _by_hand(model_dir, output_index=2), strict=True):
        np.testing.assert_allclose(judgement.scores, rewards, atol=1e-5)
    with pytest.raises(ValueError, match="output_index is 3 but reward model .* has 3 output"):
        RewardModelJudgeConfig(model=str(model_dir), output_index=3).build()


def test_a_reward_model_without_chat_template_is_refused(reward_model_dir, tmp_path):
    bare = copy_without_chat_template(reward_model_dir, tmp_path / "bare")
    with pytest.raises(ValueError, match="has no chat template"):
        RewardModelJudgeConfig(model=str(bare)).build()


def test_check_names_the_field_of_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"^judge\.model: .*no-such-rm does not exist"):
        RewardModelJudgeConfig(model=str(tmp_path / "no-such-rm")).check("judge")
    with pytest.raises(ValueError, match=r"^evaluate\.judge\.model: .* has no config.json"):
        RewardModelJudgeConfig(model=str(tmp_path)).check("evaluate.judge")
    RewardModelJudgeConfig(model="owner/some-reward-model").check("judge")  # a hub id: checked when loaded


def test_its_actors_take_the_recipes_per_worker_devices(reward_model_dir):
    assert RewardModelJudgeConfig(model=str(reward_model_dir)).engine_shape(2, 1) == EngineShape(cpus=2, gpus=1)


def test_a_recipe_ranks_with_it(tiny_model_dir, reward_model_dir, tmp_path):
    extra = ["judge.type=reward_model", f"judge.model={reward_model_dir}"]
    recipe = stage_recipe(tmp_path / "store", tiny_model_dir, extra=extra)
    assert recipe.judge == RewardModelJudgeConfig(model=str(reward_model_dir), batch_size=2)
    assert load_recipe(REPO / "configs" / "smoke.yaml", [f"judge={{type: reward_model, model: {reward_model_dir}}}"])

    generations, preferences = generate_and_rank(recipe, "reward-model")
    assert [p["prompt_id"] for p in preferences] == [g["prompt_id"] for g in generations]
    judge = recipe.judge.build()
    for row in preferences:
        prompt = PromptRecord(row["prompt_id"], row["prompt"])
        expected = judge.judge([prompt], [row["responses"]])[0]
        np.testing.assert_allclose(row["scores"], expected.scores, atol=1e-5)
        np.testing.assert_allclose(row["matrix"], expected.matrix, atol=1e-6)
