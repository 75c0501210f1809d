"""generate and rank on Ray actors give exactly what they give in-process; the local executor never imports Ray."""

import ast
import os

import pytest

from sppo.config import ComputeConfig, load_recipe
from sppo.runner import EngineShape, run_in_process
from tasks.stages import _runner

from .conftest import REPO
from .ray_cluster import RAY_ENV, generate_and_rank, stage_recipe


@pytest.fixture(scope="module")
def local_ray():
    os.environ.update(RAY_ENV)
    import ray

    from distributed.ray_pool import connect

    connect(None, num_cpus=2)
    yield ray
    ray.shutdown()


def test_two_ray_actors_match_one_in_process_worker(tmp_path, tiny_model_dir, local_ray):
    from distributed.ray_pool import RayRunner

    recipe = stage_recipe(tmp_path / "store", tiny_model_dir)
    expected = generate_and_rank(recipe, "local")
    generate_runner, rank_runner = RayRunner(workers=2), RayRunner(workers=2)
    got = generate_and_rank(recipe, "ray", generate_runner, rank_runner)
    assert got == expected
    assert [r["prompt_id"] for r in got[0]] == [r["prompt_id"] for r in expected[0]]
    assert len(set(r["responses"][0] for r in got[0])) > 1  # really sampled, not one empty string
    assert len(generate_runner.node_ids) == 2 and len(rank_runner.node_ids) == 2


def _fingerprints(*overrides: str) -> dict[str, str]:
    from sppo.stages import base, dataset, evaluate, generate, rank, train

    recipe = load_recipe(None, list(overrides))
    stages = {"base": base, "rank": rank, "dataset": dataset, "train": train, "evaluate": evaluate}
    return {"generate": generate.fingerprint_of(recipe, 1)} | {k: m.fingerprint_of(recipe) for k, m in stages.items()}


def test_fingerprints_follow_what_each_stage_uses():
    default = _fingerprints()
    # Where the work runs changes nothing.
    assert _fingerprints("compute.executor=ray", "compute.generate_workers=4", "compute.ray_address=auto") == default

    def changed(*overrides: str) -> set[str]:
        return {k for k, v in _fingerprints(*overrides).items() if v != default[k]}

    assert changed("generate.temperature=0.5") == {"generate"}  # evaluate samples with its own settings
    assert changed("generate.batch_size=8") == {"generate", "evaluate"}  # batches shape both engines' calls
    assert changed("judge.scale=2.0") == {"rank", "evaluate"}
    assert changed("evaluate.judge.type=rule", "evaluate.judge.scale=2.0") == {"evaluate"}  # not rank
    assert changed("train.loss.beta=0.5") == {"train"}
    assert changed("train.adapter=lora") == {"train"}
    assert changed("train.gradient_checkpointing=true") == set()  # recomputed activations are the same numbers
    assert changed("judge.batch_size=2") == set()  # the rule judge's batches change no verdict
    assert changed("generate.engine.type=vllm") == {"generate", "evaluate"}
    vllm = ["generate.engine.type=vllm"]
    assert _fingerprints(*vllm, "generate.engine.cpu_kv_cache_gib=1") == _fingerprints(*vllm)
    assert _fingerprints(*vllm, "precision=bf16") != _fingerprints(*vllm, "precision=fp32")


def test_local_executor_never_imports_ray():
    # No module outside distributed/ imports Ray (or distributed/) at its top level; the executor picks here.
    for path in [*REPO.glob("sppo/**/*.py"), *REPO.glob("tasks/*.py"), *REPO.glob("flows/*.py")]:
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("ray", "distributed") for n in names), f"{path}: {names}"
    assert _runner(ComputeConfig(), 1, EngineShape()) is run_in_process


def test_engines_the_cluster_cannot_fit_fail_with_what_it_lacks(local_ray):
    from distributed.ray_pool import reserve_engines

    groups = reserve_engines(2, EngineShape(cpus=1), timeout_s=30)
    assert len(groups) == 2  # exactly the 2 CPUs of this local Ray
    for g in groups:
        local_ray.util.remove_placement_group(g)

    with pytest.raises(RuntimeError, match=r"could not place 3 engine\(s\) of \[\{'CPU': 1\.0\}\]"):
        reserve_engines(3, EngineShape(cpus=1), timeout_s=3)
    # The failed reservation released what it held: two engines fit again.
    for g in reserve_engines(2, EngineShape(cpus=1), timeout_s=30):
        local_ray.util.remove_placement_group(g)


def test_a_tensor_parallel_engine_reserves_its_gpus_on_one_node():
    from distributed.ray_pool import actor_options, bundles
    from sppo.generators import VLLMGeneratorConfig
    from sppo.judges import PairRMJudgeConfig, RuleJudgeConfig

    # The plugin declares its shape; the Ray shell turns it into a placement group.
    shape = VLLMGeneratorConfig(tensor_parallel_size=4).engine_shape(cpus=4, gpus=1)
    assert shape.tensor_parallel == 4
    assert bundles(shape) == [{"CPU": 1.0, "GPU": 1.0}] * 4
    # The actor holds nothing itself; vLLM's Ray workers take the bundles of the group it runs in.
    options = actor_options(shape, group=None)
    assert options["num_gpus"] == 0 and options["num_cpus"] == 0
    assert options["scheduling_strategy"].placement_group_capture_child_tasks is True
    assert bundles(PairRMJudgeConfig().engine_shape(cpus=2, gpus=1)) == [{"CPU": 2, "GPU": 1}]
    assert bundles(RuleJudgeConfig().engine_shape(cpus=2, gpus=1)) == [{"CPU": 2}]


class _BadJudge:
    """A worker whose construction fails the way a wrong recipe field does."""

    def __init__(self):
        raise ValueError("judge.ranker_path: /nowhere holds no config.json")


class _Doubler:
    def __call__(self, units: list[int]) -> list[int]:
        return [2 * u for u in units]


def test_an_actors_exception_reaches_the_driver_with_its_cause(local_ray):
    from distributed.ray_pool import RayRunner

    with pytest.raises(ValueError, match=r"a Ray actor failed: ValueError: judge.ranker_path: /nowhere") as err:
        RayRunner(workers=2)(_BadJudge, [1, 2, 3])
    remote = str(err.value)  # the actor's traceback: its method, pid and node, and the raising line
    assert "ray::EngineActor.run() (pid=" in remote and 'raise ValueError("judge.ranker_path' in remote
    assert "\x1b[" not in str(err.value)  # no terminal colours in the task's log
    steps = []
    assert RayRunner(workers=2)(_Doubler, [1, 2, 3], progress=lambda *s: steps.append(s)) == [2, 4, 6]
    assert steps[0] == (0, 3) and steps[-1] == (3, 3) and len(steps) == 4
