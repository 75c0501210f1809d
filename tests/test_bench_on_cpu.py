"""The pure parts of the benchmark suite (bench/): the FLOP formula against a hand count, and how rows become the
table and results.json's keys. No timing is asserted anywhere: speed is measured by `make bench`, never in tests."""

from __future__ import annotations

import json

import pytest

from bench.context import FULL, QUICK, Context, with_overrides
from bench.pipeline import timeline
from bench.report import Row, flat_keys, format_table, row_record, verdict
from bench.roofline import ModelShape

from .conftest import REPO


@pytest.fixture
def tiny_llama() -> ModelShape:
    config = json.loads((REPO / "configs" / "tiny-llama.json").read_text())
    return ModelShape.from_config({**config, "vocab_size": 1000})


def test_flops_per_token_of_tiny_llama_by_hand(tiny_llama):
    # hidden 64, 4 heads of 16, 2 kv heads, MLP 128, 2 layers, vocab 1000.
    # Per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 = 12,288; MLP 3 * 64*128 = 24,576; together 36,864.
    # Two layers 73,728, LM head 64*1000 = 64,000: 137,728 weights, 2 FLOPs each.
    assert tiny_llama.matmul_params() == 137_728
    assert tiny_llama.flop_per_token(0) == 275_456
    # Attention at context c: 4 * layers 2 * heads 4 * head_dim 16 * c = 512 c.
    assert tiny_llama.flop_per_token(10) == 275_456 + 5_120


def test_generation_and_training_flops_sum_the_tokens(tiny_llama):
    # 3 tokens after a 5-token prompt attend to 6, 7 and 8 positions.
    expected = sum(tiny_llama.flop_per_token(c) for c in (6, 7, 8))
    assert tiny_llama.generation_flops(5, 3) == pytest.approx(expected)
    # A 4-token sequence: positions attend to 1..4; training is 4 forwards (3 for forward + backward, 1 reference).
    forward = sum(tiny_llama.flop_per_token(c) for c in (1, 2, 3, 4))
    assert tiny_llama.sequence_flops(4) == pytest.approx(forward)
    assert tiny_llama.training_flops([4, 4]) == pytest.approx(8 * forward)


@pytest.mark.parametrize(
    ("ratio", "target", "expected"),
    [
        (5.0, ">= 5x", "pass"),
        (4.99, ">= 5x", "FAIL"),
        (0.6, ">= 60%", "pass"),
        (0.049, "< 5%", "pass"),
        (0.05, "< 5%", "FAIL"),
        (1.2, "<= 1x", "FAIL"),
        (None, ">= 5x", ""),
        (3.0, "", ""),
    ],
)
def test_verdict(ratio, target, expected):
    assert verdict(ratio, target) == expected


def test_a_malformed_target_is_refused():
    with pytest.raises(ValueError, match="target"):
        verdict(1.0, "at least 5")


def test_rows_become_table_and_keys():
    rows = [
        Row("loop_tokens_per_s", 20.0, "tok/s"),
        Row("hf_tokens_per_s", 110.0, "tok/s", "loop", 20.0, target=">= 5x", note="40 sequences per call"),
        Row("hf_roofline", 110.0, "tok/s", "roofline", 200.0, ratio_unit="%", target=">= 60%"),
    ]
    measurements = {
        "generation": {"rows": [row_record("generation", r) for r in rows], "error": None},
        "ranking": {"rows": [row_record("ranking", Row("batched_pairs_per_s", None, ""))], "error": "boom"},
    }
    figures, ratios = flat_keys(measurements)
    assert figures == {
        "generation.loop_tokens_per_s": 20.0,
        "generation.hf_tokens_per_s": 110.0,
        "generation.hf_roofline": 110.0,
        "ranking.batched_pairs_per_s": None,
    }
    assert ratios == {"generation.hf_tokens_per_s": 5.5, "generation.hf_roofline": 0.55}
    assert measurements["generation"]["rows"][1]["verdict"] == "pass"
    assert measurements["generation"]["rows"][2]["verdict"] == "FAIL"

    table = format_table(measurements).splitlines()
    assert [cell.strip() for cell in table[0].split(" | ")][:3] == ["measurement", "figure", "value"]
    hf = next(line for line in table if "hf_tokens_per_s" in line)
    assert "loop 20.0 tok/s" in hf and "5.50x" in hf and ">= 5x pass" in hf
    assert ">= 60% FAIL" in next(line for line in table if "hf_roofline" in line)
    assert any("ranking" in line and "boom" in line for line in table)
    assert "generation.hf_tokens_per_s: 40 sequences per call" in table


def test_quick_and_full_sizes_and_overrides(tmp_path):
    assert QUICK.gen_prompts < FULL.gen_prompts and QUICK.train_pairs < FULL.train_pairs
    sizes = with_overrides(QUICK, ["gen_batch=160", "scaling_prompts=[4,8,16]", "rank_shape=pairrm"])
    assert (sizes.gen_batch, sizes.scaling_prompts, sizes.rank_shape) == (160, (4, 8, 16), "pairrm")
    with pytest.raises(ValueError, match="gen_batch"):
        with_overrides(QUICK, ["gen_batch=many"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        with_overrides(QUICK, ["no_such_size=1"])
    ctx = Context(sizes=sizes, model=tmp_path / "model", threads=2, work=tmp_path, gemm_gflops=100.0, quick=True)
    assert Context.from_json(ctx.to_json()) == ctx


def test_timeline_of_an_iteration_from_its_output_lines():
    lines = [
        (6.4, "17:18:53.006 | INFO    | prefect - Starting temporary server on http://127.0.0.1:50183"),
        (14.4, "17:19:00.938 | INFO    | Flow run 'default-iter-001' - Beginning flow run 'default-iter-001' for ..."),
        (16.0, "17:19:02.5 | INFO    | Task run 'prepare-base-6e3' - model: reused, finished at 2026-11-28T15:20:41Z"),
        (
            148.4,
            "17:21:14.994 | INFO    | Task run 'generate-06d' - generate: 8 rows in 115.7 s -> /s/default/iter-001",
        ),
        (165.8, "17:21:32.381 | INFO    | Task run 'train-7f6' - model: 8 rows in 17.0 s -> /s/default/iter-001/model"),
        (180.3, "iteration 1 of run 'default' done; metrics: ..."),
    ]
    got = timeline(lines)
    assert got["first_output_s"] == 6.4 and got["flow_begins_s"] == 14.4 and got["last_stage_done_s"] == 165.8
    # The reused prepare-base computed nothing: the first computing stage is generate, which began 115.7 s before
    # its line arrived.
    assert got["first_stage_begins_s"] == pytest.approx(148.4 - 115.7)
