"""generate and rank across a real two-node Ray cluster (head + worker node on 127.0.0.1, started with
the `ray` CLI): actors land on both nodes and the result equals the single in-process worker's."""

import os

import pytest

from .ray_cluster import RAY_ENV, LoopbackCluster, generate_and_rank, stage_recipe

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def cluster():
    os.environ.update(RAY_ENV)
    import ray

    from distributed.ray_pool import connect

    if ray.is_initialized():
        ray.shutdown()
    cluster = LoopbackCluster(workers=1)
    try:
        connect(cluster.address)  # with the token the cluster was started with
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
    assert not cluster.processes(), "processes of the test cluster outlived stop()"


def test_two_nodes_give_the_single_worker_result(tmp_path, tiny_model_dir, cluster):
    import ray

    from distributed.ray_pool import RayRunner

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2

    recipe = stage_recipe(tmp_path / "store", tiny_model_dir, executor="ray")
    expected = generate_and_rank(recipe, "local")
    # Through the same path the Prefect tasks take: the recipe's compute section.
    compute = recipe.compute.model_copy(update={"ray_address": cluster.address})
    c, g = compute.cpus_per_worker, compute.gpus_per_worker
    generate_runner = RayRunner.for_stage(compute, 2, recipe.generate.engine.engine_shape(c, g))
    rank_runner = RayRunner.for_stage(compute, 2, recipe.judge.engine_shape(c, g))
    got = generate_and_rank(recipe, "two-nodes", generate_runner, rank_runner)

    assert set(generate_runner.node_ids) == nodes
    assert set(rank_runner.node_ids) == nodes
    assert got == expected
