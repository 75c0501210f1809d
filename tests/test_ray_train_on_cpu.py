"""The train stage across the nodes of a real Ray cluster (train.launcher ray): a head and a worker node on
127.0.0.1 with 2 CPUs each, Ray Train starting 2 gloo ranks of ZeRO-3 on each. The committed model matches a
single-process run of the same global batch, every rank's steps reach the stage's log, and a mistake on the ranks
is a ValueError naming it."""

import logging
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from sppo.artifacts import PAIRS, TRAIN_FILE, write_rows
from sppo.config import DeepSpeedConfig, RecipeConfig
from sppo.models import load_policy
from sppo.pair_tokens import tokenize_pairs
from sppo.stages.base import prepare_base
from sppo.stages.train import train
from sppo.store import commit_stage
from sppo.training import train_policy

from .ray_cluster import RAY_ENV, LoopbackCluster
from .test_deepspeed_on_cpu import _rows, _train_config

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def cluster():
    os.environ.update(RAY_ENV)
    import ray

    from distributed.ray_pool import connect

    if ray.is_initialized():
        ray.shutdown()
    cluster = LoopbackCluster(workers=1, cpus=2)
    try:
        connect(cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
    assert not cluster.processes(), "processes of the test cluster outlived stop()"


def _store_with_inputs(tmp_path, tiny_model_dir, rows):
    root = tmp_path / "store"
    recipe = RecipeConfig(store=str(root), precision="fp32", threads=1, model={"base": str(tiny_model_dir)})
    base, dataset = f"{root}/run/iter-000/model", f"{root}/run/iter-001/dataset"
    prepare_base(recipe, base)

    def produce(tmp, _):
        write_rows(rows, PAIRS, tmp / TRAIN_FILE)
        return {"rows": len(rows)}

    commit_stage(recipe.open_store(), dataset, "dataset", "test", {}, produce)
    return recipe, base, dataset


def test_two_nodes_of_two_ranks_train_the_single_process_model(tiny_model_dir, tmp_path, cluster, caplog):
    import ray

    from distributed.ray_train import launch_on_cluster

    rows = _rows(16)
    base_recipe, base, dataset = _store_with_inputs(tmp_path, tiny_model_dir, rows)

    # One process: global batch 1 x 4 x 1 = 4 pairs, 4 optimizer steps.
    single = _train_config(grad_accum=4)
    model, tokenizer = load_policy(tiny_model_dir, training=True)
    pairs = tokenize_pairs(rows, tokenizer, single.max_length, single.max_prompt_length)
    expected = train_policy(model, pairs, single, tokenizer.pad_token_id, progress=False)

    # 2 nodes x 2 ranks under ZeRO-3 on gloo: global batch 1 x 1 x 4 = 4 pairs.
    spread = _train_config(processes=2, nodes=2, launcher="ray", deepspeed=DeepSpeedConfig(stage=3))
    recipe = base_recipe.model_copy(
        update={"train": spread, "compute": base_recipe.compute.model_copy(update={"ray_address": cluster.address})}
    )
    out = f"{base_recipe.store}/run/iter-001/model"
    with caplog.at_level(logging.INFO, logger="sppo.ray_train"):
        manifest = train(recipe, dataset, base, out, cluster_launch=launch_on_cluster)

    assert manifest.info["processes"] == 4 and manifest.info["steps"] == len(expected) == 4
    got = [float(x) for x in (manifest.info["first_loss"], manifest.info["final_loss"])]
    assert got == pytest.approx([expected[0]["loss"], expected[-1]["loss"]], rel=1e-4)

    # Every rank's progress is in the stage's log, from both nodes.
    steps = [r.getMessage() for r in caplog.records if "optimizer steps" in r.getMessage()]
    assert {m.split(" ")[1] for m in steps} == {"0", "1", "2", "3"}
    nodes = {m.split("(node ")[1].split(")")[0] for m in steps}
    assert len(nodes) == 2 == len([n for n in ray.nodes() if n["Alive"]])
    assert sum(m.endswith(f"{len(expected)}/{len(expected)} optimizer steps") for m in steps) == 4

    # The committed model, read back from the store, has the single-process weights (the ZeRO-3 test's criterion:
    # float-order noise that Adam carries, far below a mistake's ~lr).
    store = recipe.open_store()
    reloaded = AutoModelForCausalLM.from_pretrained(store.local_copy(out), dtype=torch.float32)
    trained = dict(model.named_parameters())
    for name, param in reloaded.named_parameters():
        diff = (param - trained[name]).abs()
        assert diff.max() < 1e-4 and (diff > 1e-5).float().mean() < 1e-3, (name, diff.max(), (diff > 1e-5).sum())
    # Ray Train's checkpoint passed through the store and is gone from it.
    assert not (tmp_path / "store" / ".ray-train").exists() or not any((tmp_path / "store" / ".ray-train").iterdir())


def test_a_mistake_on_the_ranks_is_a_value_error_naming_it(tiny_model_dir, tmp_path, cluster, caplog):
    from distributed.ray_train import launch_on_cluster

    base_recipe, base, dataset = _store_with_inputs(tmp_path, tiny_model_dir, _rows(4))
    typo = DeepSpeedConfig(config="configs/deepspeed/typo.json")  # refused by every rank as it builds its config
    spread = _train_config(processes=2, nodes=2, launcher="ray", deepspeed=typo)
    recipe = base_recipe.model_copy(
        update={"train": spread, "compute": base_recipe.compute.model_copy(update={"ray_address": cluster.address})}
    )
    with caplog.at_level(logging.INFO, logger="sppo.ray_train"), pytest.raises(ValueError, match="mistake") as err:
        train(recipe, dataset, base, f"{base_recipe.store}/run/iter-001/model", cluster_launch=launch_on_cluster)
    assert "train.deepspeed.config" in str(err.value)
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failed and "Traceback" in failed[0].getMessage()  # the rank's traceback as one entry


def test_launcher_ray_needs_a_cluster_launcher_and_nodes_need_ray():
    from sppo.config import ConfigError, load_recipe

    with pytest.raises(ConfigError, match="nodes=2 needs launcher 'ray'"):
        load_recipe(None, ["train.nodes=2", "train.deepspeed.stage=3"])
    recipe = load_recipe(None, ["train.launcher=ray", "train.deepspeed.stage=3"])
    with pytest.raises(ValueError, match="needs a Ray cluster launcher"):
        train(recipe, "unused", "unused", "unused")
