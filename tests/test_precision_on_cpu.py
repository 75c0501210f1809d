"""The recipe's precision: what `auto` resolves to, and bf16 where it is used (training under autocast with fp32
master weights and fp32 log-ratios, the HF engine's weights). These run bf16 on any CPU: natively where it has
AMX or AVX512-BF16, emulated (slower) elsewhere."""

import pytest
import torch

from sppo import precision as precision_module
from sppo.config import TrainConfig, load_recipe
from sppo.generation import EngineRequest, Sampling
from sppo.logprobs import reference_logprobs
from sppo.models import load_policy
from sppo.pair_tokens import tokenize_pairs
from sppo.precision import resolve_precision
from sppo.training import train_policy

from .test_training_on_cpu import ROWS


@pytest.mark.parametrize(
    ("flags", "gpu", "expected"),
    [
        (["avx512_bf16"], None, "bf16"),
        (["amx_bf16", "avx512_bf16"], None, "bf16"),
        ([], None, "fp32"),  # AVX2-only CPUs emulate bf16, slower than fp32
        ([], True, "bf16"),  # a bf16 GPU decides, whatever the host CPU
        (["avx512_bf16"], False, "fp32"),  # a GPU without bf16 (pre-Ampere) decides too
    ],
)
def test_auto_picks_bf16_only_where_the_hardware_computes_it(monkeypatch, flags, gpu, expected):
    monkeypatch.setattr(precision_module, "native_bf16_flags", lambda: flags)
    monkeypatch.setattr(precision_module, "_cuda_bf16", lambda: gpu)
    chosen = resolve_precision("auto")
    assert chosen.name == expected and chosen.reason.startswith("auto: ")
    assert resolve_precision("fp32").name == "fp32"
    forced = resolve_precision("bf16")
    assert forced.name == "bf16" and ("no native bf16" in forced.reason) == (expected == "fp32")


def test_a_precision_outside_the_three_is_a_recipe_error():
    from sppo.config import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        load_recipe(None, ["precision=fp16"])


def _cfg(**changes) -> TrainConfig:
    fields = dict(loss={"type": "sppo", "beta": 0.1}, learning_rate=1e-4, optimizer="adamw", batch_size=2)
    return TrainConfig(**{**fields, "warmup_ratio": 0.0, "max_length": 128, "max_prompt_length": 64, **changes})


def test_bf16_training_keeps_fp32_weights_and_starts_from_zero_log_ratios(tiny_model_dir):
    torch.manual_seed(0)
    model, tokenizer = load_policy(tiny_model_dir, training=True)
    pairs = tokenize_pairs(ROWS, tokenizer, 128, 64)
    # As the engine would hand them: reference log-probs from generation, which bf16 training must not mix with
    # its own forward (they differ by more than rounding; README: precision).
    given = reference_logprobs(model, pairs, 2, tokenizer.pad_token_id)
    pairs = [p.__class__(**{**p.__dict__, "reference": tuple(r)}) for p, r in zip(pairs, given.tolist(), strict=True)]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    history = train_policy(
        model, pairs, _cfg(), tokenizer.pad_token_id, progress=False, precision=resolve_precision("bf16")
    )

    # The first step's log-ratios: the policy against the reference computed in the same bf16 forward, so 0.
    assert history[0]["logr_chosen"] == 0.0 and history[0]["logr_rejected"] == 0.0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the master weights stay fp32
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)


def test_bf16_log_probs_stay_close_to_fp32(tiny_model_dir):
    """The same sequences in both precisions: a small gap per sequence (the default model's measured one is in
    bench/precision.py's figures), and fp32 log-softmax sums (no bf16 rounding of the sum itself)."""
    model, tokenizer = load_policy(tiny_model_dir)
    pairs = tokenize_pairs(ROWS, tokenizer, 128, 64)
    fp32 = reference_logprobs(model, pairs, 2, tokenizer.pad_token_id)
    bf16 = reference_logprobs(model, pairs, 2, tokenizer.pad_token_id, bf16=True)
    assert fp32.dtype == bf16.dtype == torch.float32
    assert not torch.equal(fp32, bf16)  # bf16 really ran
    assert (fp32 - bf16).abs().max() < 0.05 * fp32.abs().max()


def test_the_hf_engine_computes_in_the_requested_precision(tiny_model_dir):
    from sppo.generators import HFGeneratorConfig

    engine = HFGeneratorConfig().build(EngineRequest(str(tiny_model_dir), 4, 64, 8, precision="bf16"))
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    out = engine.generate(["Name a colour."], Sampling(2, 0.7, 0.9, 8, seed=0, logprobs=True))
    assert len(out[0]) == 2 and all(c.logprob is not None and c.logprob < 0 for c in out[0])
