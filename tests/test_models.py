"""Base models: any local HF folder works as model.base, and the result is a loadable policy folder."""

import torch

from sppo.config import load_recipe
from sppo.models import load_policy, prepare_base_model
from sppo.stages.base import prepare_base
from sppo.store import ArtifactStore

from .conftest import REPO


def test_local_folder_as_base_gives_the_same_model(tiny_model_dir, tmp_path):
    out = tmp_path / "base"
    prepare_base_model(str(tiny_model_dir), out)
    (a, tok_a), (b, _) = load_policy(tiny_model_dir), load_policy(out)
    assert tok_a.chat_template and (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin")), "weights must be safetensors, never pickles"
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_prepare_base_is_committed_once(tiny_model_dir, tmp_path):
    recipe = load_recipe(REPO / "configs" / "smoke.yaml", [f"model.base={tiny_model_dir}"])
    out = str(tmp_path / "iter-000" / "model")
    first = prepare_base(recipe, out)
    again = prepare_base(recipe, out)
    assert first == again == ArtifactStore(recipe.store).manifest(out)
    assert "model.safetensors" in first.outputs
