"""One Prefect task per stage. Each takes folder URIs and the recipe, calls the library, and returns
the URI of the folder it committed: models and tables never pass through Prefect's results."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sppo.config import ComputeConfig, RecipeConfig
from sppo.runner import Runner, run_in_process
from sppo.stages.base import prepare_base
from sppo.stages.dataset import build_dataset
from sppo.stages.evaluate import evaluate
from sppo.stages.generate import generate
from sppo.stages.rank import rank
from sppo.stages.train import train
from sppo.store import Manifest
from tasks.progress import ProgressArtifact
from tasks.reuse import stage_reused


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


def _runner(compute: ComputeConfig, workers: int, tensor_parallel: int = 1) -> Runner:
    """Where a stage's work units run: here, or on `workers` Ray actors (recipe section `compute`)."""
    if compute.executor == "local":
        return run_in_process
    from distributed.ray_pool import RayRunner  # only now: the local executor never imports Ray

    return RayRunner.for_stage(compute, workers, tensor_parallel)


def _done(manifest: Manifest, out: str, started: float) -> str:
    logger = get_run_logger()
    if stage_reused(manifest, started):
        logger.info(
            "%s: reused, finished at %s (%s rows in %.1f s then) -> %s",
            *(manifest.stage, manifest.created, manifest.rows, manifest.seconds, out),
        )
    else:
        logger.info("%s: %s rows in %.1f s -> %s", manifest.stage, manifest.rows, manifest.seconds, out)
    return out


@task(name="prepare-base", **STAGE)
def prepare_base_task(recipe: RecipeConfig, out: str) -> str:
    started = time.time()
    return _done(prepare_base(recipe, out), out, started)


@task(name="generate", **STAGE)
def generate_task(recipe: RecipeConfig, policy: str, iteration: int, out: str) -> str:
    started = time.time()
    g = recipe.generate
    tensor_parallel = g.vllm.tensor_parallel_size if g.backend == "vllm" else 1
    runner = _runner(recipe.compute, recipe.compute.generate_workers, tensor_parallel)
    progress = ProgressArtifact(f"generate, iteration {iteration}: generation batches done")
    return _done(generate(recipe, policy, iteration, out, runner, progress), out, started)


@task(name="rank", **STAGE)
def rank_task(recipe: RecipeConfig, generations: str, out: str) -> str:
    started = time.time()
    manifest = rank(recipe, generations, out, _runner(recipe.compute, recipe.compute.rank_workers))
    return _done(manifest, out, started)


@task(name="build-parquet", **STAGE)
def build_dataset_task(recipe: RecipeConfig, preferences: str, out: str) -> str:
    started = time.time()
    return _done(build_dataset(recipe, preferences, out), out, started)


@task(name="train", **STAGE)
def train_task(recipe: RecipeConfig, dataset: str, policy: str, out: str) -> str:
    started = time.time()
    progress = ProgressArtifact(f"train: optimizer steps done ({out})")
    return _done(train(recipe, dataset, policy, out, progress), out, started)


@task(name="evaluate", **STAGE)
def evaluate_task(recipe: RecipeConfig, policy: str, reference: str, base: str, out: str, cache: str) -> str:
    started = time.time()
    return _done(evaluate(recipe, policy, reference, base, out, cache), out, started)
