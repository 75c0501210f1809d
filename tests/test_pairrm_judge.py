"""PairRMJudge on a tiny random PairRM built locally, loaded through the real llm-blender code."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sppo.judges.base import sigmoid_matrix
from sppo.judges.pairrm import PairRMJudge, PairRMJudgeConfig
from sppo.prompts import PromptRecord
from sppo.testing import build_tiny_pairrm

PROMPTS = [
    PromptRecord(id="poem", prompt="Write a short poem about the sea."),
    PromptRecord(id="sky", prompt="Explain why the sky is blue in simple words."),
    PromptRecord(id="fruit", prompt="List three fruits that are red."),
]
RESPONSES = [
    [
        "The sea is wide and the wind is cold.",
        "Sorry, I cannot help with that.",
        "Waves",
        "Blue water, bright stars.",
    ],
    [
        "Light scatters in the air.",
        "Because it is.",
        "The sky is blue because blue light is scattered more.",
        "",
    ],
    ["Apple, cherry, strawberry.", "Bananas are yellow.", "red red red", "Tomato, raspberry and cherry."],
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # A 32-wide model gains nothing from threads, and on a busy 2-core box torch's thread pool makes
    # each tiny matmul wait ~8 ms for the other core (0.02 ms on one thread).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ranker_path(tmp_path_factory):
    return str(build_tiny_pairrm(tmp_path_factory.mktemp("pairrm")))


@pytest.fixture(scope="module")
def judges(ranker_path):
    return {mode: PairRMJudge(ranker_path, mode=mode, batch_size=2) for mode in ("scores", "pairwise")}


@pytest.mark.parametrize("mode", ["scores", "pairwise"])
def test_judgements_are_preference_matrices(judges, mode):
    judgements = judges[mode].judge(PROMPTS, RESPONSES)
    assert judges[mode].name == "pairrm"
    assert len(judgements) == len(PROMPTS)
    for j in judgements:
        assert j.scores.shape == (4,) and j.matrix.shape == (4, 4)
        np.testing.assert_allclose(j.matrix + j.matrix.T, 1.0, atol=1e-12)
        np.testing.assert_array_equal(np.diag(j.matrix), 0.5)
        assert ((j.matrix > 0) & (j.matrix < 1)).all()
    # A random ranker still tells responses apart: the matrix is not all 1/2.
    assert np.abs(np.stack([j.matrix for j in judgements]) - 0.5).max() > 0.05


@pytest.mark.parametrize("mode", ["scores", "pairwise"])
def test_deterministic_across_calls_and_rebuilds(judges, tmp_path, mode):
    first = judges[mode].judge(PROMPTS, RESPONSES)
    again = judges[mode].judge(PROMPTS, RESPONSES)
    rebuilt = PairRMJudge(str(build_tiny_pairrm(tmp_path / "again")), mode=mode, batch_size=2)
    other = rebuilt.judge(PROMPTS, RESPONSES)
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a.matrix, b.matrix)
        np.testing.assert_allclose(a.matrix, c.matrix, atol=1e-6)


def test_scores_mode_is_sigmoid_of_llm_blender_rank(judges):
    judge = judges["scores"]
    expected = judge.blender.rank(
        [p.prompt for p in PROMPTS], RESPONSES, return_scores=True, batch_size=8, disable_tqdm=True
    )
    for j, s in zip(judge.judge(PROMPTS, RESPONSES), expected, strict=True):
        np.testing.assert_allclose(j.scores, s, atol=1e-5)
        np.testing.assert_allclose(j.matrix, sigmoid_matrix(s.astype(np.float64)), atol=1e-5)


def test_pairwise_mode_matches_llm_blender_compare(judges):
    judge = judges["pairwise"]
    judgements = judge.judge(PROMPTS, RESPONSES)
    p, i, j = 1, 0, 2
    logit = judge.blender.compare(
        [PROMPTS[p].prompt], [RESPONSES[p][i]], [RESPONSES[p][j]], return_logits=True, disable_tqdm=True
    )[0]
    np.testing.assert_allclose(judgements[p].matrix[i, j], 1 / (1 + np.exp(-logit)), atol=1e-5)
    np.testing.assert_allclose(judgements[p].matrix[j, i], 1 / (1 + np.exp(logit)), atol=1e-5)
    np.testing.assert_allclose(judgements[p].scores, judgements[p].matrix.mean(axis=1))


def test_both_modes_see_the_same_pairwise_logits(judges):
    # rank() scores are s_i = mean_j (L_ij - L_ji) and compare() logits are L_ij - L_ji, so the scores are
    # the row means of the pairwise matrix's logits (its diagonal, logit(1/2) = 0, included).
    by_scores = judges["scores"].judge(PROMPTS, RESPONSES)
    by_pairs = judges["pairwise"].judge(PROMPTS, RESPONSES)
    for s, w in zip(by_scores, by_pairs, strict=True):
        np.testing.assert_allclose(np.log(w.matrix / (1 - w.matrix)).mean(axis=1), s.scores, atol=1e-4)


def test_missing_ranker_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-ranker"
    with pytest.raises(FileNotFoundError, match="no-such-ranker"):
        PairRMJudge(str(missing))


@pytest.mark.parametrize(
    "backbone", [{"model_type": "phi", "model_name": "microsoft/phi-2"}, {"model_name": "microsoft/phi-2"}]
)
def test_a_ranker_needing_remote_code_is_refused_before_any_load(ranker_path, tmp_path, backbone, monkeypatch):
    import llm_blender.blender.blender as blender_module

    phi = tmp_path / "phi-ranker"
    shutil.copytree(ranker_path, phi)
    config = json.loads((phi / "config.json").read_text())
    (phi / "config.json").write_text(json.dumps({**config, **backbone}))

    def no_load(*args, **kwargs):
        raise AssertionError("llm-blender was asked to load the ranker")

    monkeypatch.setattr(blender_module.Blender, "loadranker", no_load)
    with pytest.raises(ValueError, match=r"judge\.trust_remote_code: .*phi-ranker.*trust_remote_code=True"):
        PairRMJudge(str(phi))
    with pytest.raises(ValueError, match="judge.trust_remote_code"):
        PairRMJudgeConfig(ranker_path=str(phi)).build()
    # Allowed: the load goes ahead (and reaches llm-blender).
    with pytest.raises(RuntimeError, match="llm-blender was asked"):
        PairRMJudgeConfig(ranker_path=str(phi), trust_remote_code=True).build()


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PairRMJudge(str(tmp_path))


def test_checkpoint_missing_weights_is_an_error(ranker_path, tmp_path):
    # llm-blender loads a pytorch_model.bin with strict=False and only warns about missing keys.
    partial = tmp_path / "partial"
    shutil.copytree(ranker_path, partial)
    state = load_file(partial / "model.safetensors")
    (partial / "model.safetensors").unlink()
    torch.save({k: v for k, v in state.items() if not k.startswith("head_layer")}, partial / "pytorch_model.bin")
    with pytest.raises(RuntimeError, match="does not fit the model.*head_layer"):
        PairRMJudge(str(partial))


def test_unknown_mode_is_rejected(ranker_path):
    with pytest.raises(ValueError, match="mode"):
        PairRMJudge(ranker_path, mode="bubble")


def test_chat_template_prompts_are_what_the_reference_gives_pairrm(judges, tiny_model_dir):
    """uclaml/SPPO's rank.py hands PairRM the prompt in the policy's chat template, not the raw text."""
    from dataclasses import replace

    from sppo.generation import chat_prompt_text
    from sppo.models import load_policy_tokenizer

    tokenizer = load_policy_tokenizer(tiny_model_dir)
    templated = [replace(p, chat_prompt=chat_prompt_text(tokenizer, p.prompt)) for p in PROMPTS]
    assert templated[0].chat_prompt.startswith("<|im_start|>") and PROMPTS[0].prompt in templated[0].chat_prompt
    judge = judges["scores"]
    judge.prompt_format = "chat_template"
    try:
        got = judge.judge(templated, RESPONSES)
        with pytest.raises(ValueError, match="prompt 'poem' in the policy's chat template"):
            judge.judge(PROMPTS, RESPONSES)
    finally:
        judge.prompt_format = "raw"
    expected = judge.blender.rank(
        [p.chat_prompt for p in templated], RESPONSES, return_scores=True, batch_size=2, disable_tqdm=True
    )
    for j, s in zip(got, expected, strict=True):
        np.testing.assert_allclose(j.scores, s, atol=1e-5)
    raw = judge.judge(templated, RESPONSES)  # the same records, read raw: other scores
    assert any(not np.allclose(a.scores, b.scores) for a, b in zip(got, raw, strict=True))
