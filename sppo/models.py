"""Where policies come from and how they are written: the base model of a run (iteration 0) and loading
any iteration's policy folder for generation or training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaConfig, LlamaForCausalLM

from sppo.artifacts import ADAPTER_FOLDER
from sppo.sources import (
    SMOLLM2_GGUF,
    ModelSourceError,
    require_model_source,
    require_tokenizer_source,
    smollm2_gguf_location,
)

log = logging.getLogger(__name__)


class NonFiniteWeightsError(ValueError):
    pass


def load_tokenizer(source: str, trust_remote_code: bool = False, revision: str | None = None):
    """`revision` applies to a hub id only."""
    if source == SMOLLM2_GGUF:
        folder, name = smollm2_gguf_location()
        return AutoTokenizer.from_pretrained(folder, gguf_file=name)
    require_tokenizer_source(source)
    local = Path(source).expanduser()
    if not local.exists():  # a hub id: its errors (network, auth) are transformers' own
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    try:
        return AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as err:
        raise ModelSourceError(f"{local}: no usable tokenizer ({_first_line(err)}); {_TOKENIZER_FILES}") from None


def _load_base(source: str, tokenizer_source: str | None, trust_remote_code: bool, revision: str | None):
    if source == SMOLLM2_GGUF:
        folder, name = smollm2_gguf_location()
        # Without dequantize=True the model keeps GGUF tensors and can be neither saved nor trained.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        return model, load_tokenizer(SMOLLM2_GGUF)
    require_model_source(source)
    if source.startswith("random:"):
        config_path = Path(source.removeprefix("random:"))
        tokenizer = load_tokenizer(tokenizer_source or SMOLLM2_GGUF, trust_remote_code, revision)
        fields = json.loads(config_path.read_text())
        fields.update(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(fields.pop("seed", 0))
        return LlamaForCausalLM(LlamaConfig(**fields)).float(), tokenizer
    # A local folder or a hub id (at `revision`): transformers resolves both.
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, trust_remote_code=trust_remote_code, revision=revision
        )
    except (OSError, ValueError) as err:
        if not Path(source).expanduser().exists():
            raise  # a hub id: a network error may pass on a retry
        raise ModelSourceError(f"model.base: {source} holds no loadable model ({_first_line(err)})") from None
    # The revision pins the base's own repo: a tokenizer from another hub repo is loaded at its default branch.
    tokenizer_revision = revision if tokenizer_source in (None, source) else None
    return model, load_tokenizer(tokenizer_source or source, trust_remote_code, tokenizer_revision)


_TOKENIZER_FILES = "the folder needs tokenizer.json (or the tokenizer's own files) and tokenizer_config.json"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def prepare_base_model(
    source: str,
    out_dir: Path,
    tokenizer_source: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> None:
    """Write the base policy as a plain HF folder (safetensors, tokenizer, chat template) into out_dir; `revision`
    is that of the hub repo it comes from (model.revision)."""
    model, tokenizer = _load_base(source, tokenizer_source, trust_remote_code, revision)
    require_chat_template(tokenizer, source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    save_policy(model, tokenizer, out_dir)


def save_policy(model, tokenizer, out_dir: Path, state_dict: dict | None = None) -> None:
    """An HF model folder: safetensors weights, config, tokenizer. `state_dict`: the weights to write where the
    model's own are partitioned (ZeRO-3 gathers them on rank 0)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def save_trained_policy(
    model, tokenizer, out_dir: Path, policy_dir: Path, state_dict: dict | None = None, trust_remote_code: bool = False
) -> None:
    """Write pi_{t+1} as every later stage reads it: a plain HF folder (save_policy).

    A policy trained through an adapter (a peft model) also writes the adapter, as peft saves it, into
    out_dir/adapter/; the folder's own weights are pi_t's, reloaded from `policy_dir`, with that saved adapter
    merged in, so the committed model is exactly the committed adapter applied to pi_t (and the model in
    training, whose base weights may be partitioned or cast, is never merged in place). `state_dict`: as for
    save_policy; for a peft model only its adapter weights are needed."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        save_policy(model, tokenizer, out_dir, state_dict)
        return
    adapter_dir = out_dir / ADAPTER_FOLDER
    # save_embedding_layers: we never resize the vocabulary, and "auto" may ask the hub about the base's name.
    model.save_pretrained(adapter_dir, state_dict=state_dict, safe_serialization=True, save_embedding_layers=False)
    base = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    save_policy(merged, tokenizer, out_dir)


def check_weights_finite(model_dir: Path) -> None:
    """Raise if any saved weight is NaN or infinite: such a model must never be committed."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ModelSourceError(f"{model_dir} holds no .safetensors weights")
    for path in files:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                tensor = weights.get_tensor(name)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise NonFiniteWeightsError(
                        f"{path.name}: weight {name} holds NaN or infinity after training; the model is not "
                        "committed (lower train.learning_rate, or raise train.loss.beta)"
                    )


def require_chat_template(tokenizer, where: str | Path) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelSourceError(
            f"model {where} has no chat template; SPPO samples chat responses, so use an instruct model or add "
            "`chat_template` to its tokenizer_config.json"
        )


def load_policy_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    """A policy folder's tokenizer, checked for a chat template, padding on the left."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelSourceError(f"{model_dir} is not a model folder (no config.json)")
    tokenizer = load_tokenizer(str(model_dir), trust_remote_code)
    require_chat_template(tokenizer, model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    model_dir: str | Path, trust_remote_code: bool = False, training: bool = False, dtype: torch.dtype = torch.float32
):
    """An iteration's policy and a left-padding tokenizer. Training loads fp32 (its master weights) and computes
    in bf16 under autocast where the recipe's precision says so; an engine loads its weights in its precision."""
    tokenizer = load_policy_tokenizer(model_dir, trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
    model.train(training)
    return model, tokenizer


def configure_torch(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
