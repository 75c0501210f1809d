"""One Prefect task per stage. Each takes folder URIs and the recipe, calls the library, and returns
the URI of the folder it committed: models and tables never pass through Prefect's results."""

from __future__ import annotations

import errno
from typing import NamedTuple

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sppo.config import ComputeConfig, RecipeConfig
from sppo.runner import EngineShape, Runner, run_in_process
from sppo.stages.base import prepare_base
from sppo.stages.dataset import build_dataset
from sppo.stages.evaluate import evaluate
from sppo.stages.generate import generate
from sppo.stages.rank import rank
from sppo.stages.train import train
from sppo.store import Manifest
from sppo.timeouts import StageTimeout, stage_deadline
from tasks.progress import ProgressArtifact


def _transient(task, task_run, state) -> bool:
    """Retry crashes of the machine or the store, not mistakes in the recipe or the data (ValueError), nor a
    full disk (ENOSPC; the library names the path as a DiskFullError, a ValueError, where it can), nor a stage
    that ran past its deadline (it would hang or run as long again)."""
    try:
        state.result()
    except (ValueError, StageTimeout):
        return False
    except OSError as err:
        return err.errno != errno.ENOSPC
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


class StageResult(NamedTuple):
    """What a stage task hands the flow: the committed folder, and whether an earlier run had made it."""

    url: str
    reused: bool


def _done(manifest: Manifest, out: str) -> StageResult:
    logger = get_run_logger()
    if manifest.reused:
        logger.info(
            "%s: reused, finished at %s (%s rows in %.1f s then) -> %s",
            *(manifest.stage, manifest.created, manifest.rows, manifest.seconds, out),
        )
    else:
        logger.info("%s: %s rows in %.1f s -> %s", manifest.stage, manifest.rows, manifest.seconds, out)
    return StageResult(out, manifest.reused)


def _deadline(recipe: RecipeConfig, stage: str, iteration: int):
    """Each attempt of a stage runs within compute.stage_timeout_s (StageTimeout past it, not retried)."""
    return stage_deadline(recipe.compute.stage_timeout_s, stage, iteration)


@task(name="prepare-base", **STAGE)
def prepare_base_task(recipe: RecipeConfig, out: str) -> StageResult:
    with _deadline(recipe, "prepare-base", 0):
        return _done(prepare_base(recipe, out), out)


@task(name="generate", **STAGE)
def generate_task(recipe: RecipeConfig, policy: str, iteration: int, out: str) -> StageResult:
    c = recipe.compute
    shape = recipe.generate.engine.engine_shape(c.cpus_per_worker, c.gpus_per_worker)
    runner = _runner(c, c.generate_workers, shape)
    progress = ProgressArtifact(f"generate, iteration {iteration}: generation batches done")
    with _deadline(recipe, "generate", iteration):
        return _done(generate(recipe, policy, iteration, out, runner, progress), out)


@task(name="rank", **STAGE)
def rank_task(recipe: RecipeConfig, generations: str, iteration: int, out: str) -> StageResult:
    c = recipe.compute
    runner = _runner(c, c.rank_workers, recipe.judge.engine_shape(c.cpus_per_worker, c.gpus_per_worker))
    with _deadline(recipe, "rank", iteration):
        return _done(rank(recipe, generations, out, runner), out)


@task(name="build-parquet", **STAGE)
def build_dataset_task(recipe: RecipeConfig, preferences: str, iteration: int, out: str) -> StageResult:
    with _deadline(recipe, "build-parquet", iteration):
        return _done(build_dataset(recipe, preferences, out), out)


@task(name="train", **STAGE)
def train_task(recipe: RecipeConfig, dataset: str, policy: str, iteration: int, out: str) -> StageResult:
    progress = ProgressArtifact(f"train: optimizer steps done ({out})")
    with _deadline(recipe, "train", iteration):
        return _done(train(recipe, dataset, policy, out, progress), out)


@task(name="evaluate", **STAGE)
def evaluate_task(
    recipe: RecipeConfig, policy: str, reference: str, base: str, iteration: int, out: str, cache: str
) -> StageResult:
    with _deadline(recipe, "evaluate", iteration):
        return _done(evaluate(recipe, policy, reference, base, out, cache), out)
