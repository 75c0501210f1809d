"""One Prefect task per stage. Each takes folder URIs and the recipe, calls the library, and returns
the URI of the folder it committed: models and tables never pass through Prefect's results."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from sppo.artifacts import METRICS_FILE
from sppo.config import ComputeConfig, RecipeConfig
from sppo.runner import EngineShape, Runner, run_in_process
from sppo.stages.base import prepare_base
from sppo.stages.dataset import build_dataset
from sppo.stages.evaluate import evaluate
from sppo.stages.generate import generate
from sppo.stages.rank import rank
from sppo.stages.train import train
from sppo.store import Manifest


def _transient(task, task_run, state) -> bool:
    """Retry crashes of the machine or the store, not mistakes in the recipe or the data (ValueError)."""
    try:
        state.result()
    except ValueError:
        return False
    except Exception:  # noqa: BLE001 - anything else may pass on a second try
        return True
    return False


# Skipping finished work is the manifests' job (store.commit_stage), not Prefect's result cache.
STAGE = dict(
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)


def _runner(compute: ComputeConfig, workers: int, shape: EngineShape) -> Runner:
    """Where a stage's work units run: here, or on `workers` Ray actors of the plugin's `shape` (recipe
    section `compute`)."""
    if compute.executor == "local":
        return run_in_process
    from distributed.ray_pool import RayRunner  # only now: the local executor never imports Ray

    return RayRunner.for_stage(compute, workers, shape)


def _done(manifest: Manifest, out: str) -> str:
    if manifest.reused:
        get_run_logger().info("%s: reused, finished at %s -> %s", manifest.stage, manifest.created, out)
    else:
        get_run_logger().info("%s: %s rows in %.1f s -> %s", manifest.stage, manifest.rows, manifest.seconds, out)
    return out


@task(name="prepare-base", **STAGE)
def prepare_base_task(recipe: RecipeConfig, out: str) -> str:
    return _done(prepare_base(recipe, out), out)


@task(name="generate", **STAGE)
def generate_task(recipe: RecipeConfig, policy: str, iteration: int, out: str) -> str:
    c = recipe.compute
    shape = recipe.generate.engine.engine_shape(c.cpus_per_worker, c.gpus_per_worker)
    runner = _runner(c, c.generate_workers, shape)
    return _done(generate(recipe, policy, iteration, out, runner), out)


@task(name="rank", **STAGE)
def rank_task(recipe: RecipeConfig, generations: str, out: str) -> str:
    c = recipe.compute
    runner = _runner(c, c.rank_workers, recipe.judge.engine_shape(c.cpus_per_worker, c.gpus_per_worker))
    return _done(rank(recipe, generations, out, runner), out)


@task(name="build-parquet", **STAGE)
def build_dataset_task(recipe: RecipeConfig, preferences: str, out: str) -> str:
    return _done(build_dataset(recipe, preferences, out), out)


@task(name="train", **STAGE)
def train_task(recipe: RecipeConfig, dataset: str, policy: str, out: str) -> str:
    return _done(train(recipe, dataset, policy, out), out)


@task(name="evaluate", **STAGE)
def evaluate_task(recipe: RecipeConfig, policy: str, reference: str, base: str, out: str, cache: str) -> str:
    manifest = evaluate(recipe, policy, reference, base, out, cache)
    metrics = recipe.open_store().read_bytes(f"{out}/{METRICS_FILE}").decode()
    create_markdown_artifact(
        key="sppo-metrics",
        markdown=f"### SPPO evaluation: {out}\n\n```json\n{metrics}\n```",
        description="Win rates of pi_{t+1} against pi_t and the base model on held-out prompts",
    )
    return _done(manifest, out)
