"""Every engine stops on the same ids (the end of turn and every EOS id of the model's generation config), an
answer that stops on any of them is finished, never cut, and a completion missing what was asked is an error.
vLLM's side of the same checks: tests/test_vllm_on_cpu.py."""

import json
import shutil
from collections import Counter

import pytest

from sppo.generation import Completion, EngineRequest, Sampling, check_completions, sequence_logprob, stop_token_ids
from sppo.logprobs import reference_logprobs
from sppo.models import load_policy
from sppo.pair_tokens import tokenize_pairs

EOS, OTHER = 2, 7
PROMPTS = ["Name a colour.", "Count to three."]
SAMPLING = Sampling(4, 0.7, 0.9, 12, seed=1, logprobs=True)  # the recipe's temperature and top-p


def test_a_response_ends_at_the_first_stop_id_with_the_end_of_turns_probability():
    # Steps: tokens sampled and the end-of-turn's log-prob at each; OTHER (a second EOS id) stops at step 2.
    tokens, token_lps, eos_lps = [5, 6, OTHER, 9], [-1.0, -2.0, -3.0, -4.0], [-10.0, -11.0, -12.0, -13.0]
    kept, logprob, finished = sequence_logprob(tokens, token_lps, eos_lps, {EOS, OTHER}, max_new_tokens=3)
    # Training trains tokens + the end of turn, so the log-prob is theirs: -1 - 2 and the end of turn at step 2.
    assert (kept, logprob, finished) == ([5, 6], -15.0, True)
    cut = sequence_logprob([5, 6, 8, 9], token_lps, eos_lps, {EOS, OTHER}, max_new_tokens=3)
    assert cut == ([5, 6, 8], -1.0 - 2.0 - 3.0 - 13.0, False)
    # The Llama-3 crash: an engine that stopped on an id the caller does not know is named, not an IndexError.
    with pytest.raises(ValueError, match="stop ids"):
        sequence_logprob([5, 99], [-1.0, -2.0], [-10.0, -11.0], {EOS}, max_new_tokens=3)


@pytest.fixture(scope="module")
def two_eos_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with a second EOS id in its generation config: a token it samples often, so answers stop
    on it as Llama 3's stop on <|end_of_text|> beside <|eot_id|>."""
    from sppo.generators import HFGeneratorConfig

    engine = HFGeneratorConfig().build(EngineRequest(str(tiny_model_dir), 8, 64, 12))
    # The same seeded sampling as the test below: it samples this token, so with it as a stop id answers end there.
    sampled = engine.generate(PROMPTS, SAMPLING)
    common = Counter(t for cs in sampled for c in cs for t in c.token_ids[:3]).most_common(1)[0][0]
    folder = tmp_path_factory.mktemp("two-eos") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [engine.tokenizer.eos_token_id, common]
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder, common


def test_the_hf_engine_stops_on_every_eos_id_of_the_generation_config(two_eos_model):
    from sppo.generators import HFGeneratorConfig

    folder, other = two_eos_model
    engine = HFGeneratorConfig().build(EngineRequest(str(folder), 8, 64, 12))
    assert stop_token_ids(engine.tokenizer, folder) == {engine.tokenizer.eos_token_id, other}
    prompts = PROMPTS
    out = engine.generate(prompts, SAMPLING)
    completions = [c for cs in out for c in cs]
    assert any(c.finished and c.num_tokens < 12 for c in completions)
    assert all(other not in c.token_ids and engine.tokenizer.eos_token_id not in c.token_ids for c in completions)
    # Each engine log-prob is training's for the same tokens + end of turn, at the recipe's temperature and top-p.
    model, tokenizer = load_policy(folder)
    rows = [
        {"prompt": prompts[i // 4], "chosen": "", "rejected": "", "chosen_token_ids": list(c.token_ids),
         "rejected_token_ids": list(c.token_ids)}
        for i, c in enumerate(completions)
    ]  # fmt: skip
    pairs = tokenize_pairs(rows, tokenizer, 256, 128)
    trained = reference_logprobs(model, pairs, 8, tokenizer.pad_token_id)[:, 0]
    assert trained.tolist() == pytest.approx([c.logprob for c in completions], abs=1e-3)


def test_a_completion_without_what_was_asked_is_an_error_naming_the_engine():
    asked = Sampling(2, 0.7, 0.9, 8, seed=0, logprobs=True)
    good = Completion("hi", 1, True, (5,), -1.5)
    check_completions([[good, good]], asked, "hf")
    dropped = Completion("hi", 1, True)  # an engine that ignored Sampling.logprobs
    with pytest.raises(RuntimeError, match="generate.engine 'odd' returned prompt 1's completion without"):
        check_completions([[good, good], [good, dropped]], asked, "odd")
    check_completions([[dropped]], Sampling(1, 0.7, 0.9, 8, seed=0), "odd")  # nothing asked, nothing missing


def test_the_generate_stage_refuses_an_engine_that_drops_log_probs(tmp_path, monkeypatch):
    from sppo.config import load_recipe
    from sppo.generators import hf
    from sppo.stages.base import prepare_base
    from sppo.stages.generate import generate
    from sppo.store import RunLayout

    from .conftest import REPO

    recipe = load_recipe(REPO / "configs" / "smoke.yaml", [f"store={tmp_path}", "data.prompts_per_iteration=2"])
    layout = RunLayout(recipe.open_store(), "drops")
    prepare_base(recipe, layout.model_url(0))
    real = hf.HFGenerator.generate_batches

    def forgetful(self, batches, sampling):
        per_batch = real(self, batches, sampling)
        return [[[Completion(c.text, c.num_tokens, c.finished) for c in cs] for cs in b] for b in per_batch]

    monkeypatch.setattr(hf.HFGenerator, "generate_batches", forgetful)
    with pytest.raises(RuntimeError, match="generate.engine 'hf' returned prompt 0's completion without"):
        generate(recipe, layout.model_url(0), 1, layout.stage_url(1, "generate"))
    assert not recipe.open_store().exists(f"{layout.stage_url(1, 'generate')}/manifest.json")
