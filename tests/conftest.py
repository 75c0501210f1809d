"""Shared fixtures: a tiny random Llama with SmolLM2's tokenizer and chat template, built once per session."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def copy_without_chat_template(model_dir: Path, dest: Path) -> Path:
    """A copy of a model folder whose tokenizer has no chat template (neither the .jinja file nor the config key)."""
    shutil.copytree(model_dir, dest)
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((dest / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    return dest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from sppo.models import prepare_base_model

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    prepare_base_model(f"random:{REPO / 'configs' / 'tiny-llama.json'}", out)
    return out


@pytest.fixture(scope="session", autouse=True)
def stop_prefect_temporary_server():
    """Stop Prefect's temporary API while pytest still owns stdout; its own atexit hook logs to a closed stream."""
    yield
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=5)  # send pending flow-run logs before the API goes away
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()
