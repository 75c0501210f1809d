"""One Prefect task per stage. Each takes folder URIs and the recipe, calls the library, and returns
the URI of the folder it committed: models and tables never pass through Prefect's results."""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
from collections.abc import Callable, Iterator
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
from sppo.stages.train import ClusterLaunch, train
from sppo.store import Manifest
from sppo.timeouts import StageTimeout, stage_deadline
from tasks.failures import StageCrash, as_stage_failure
from tasks.progress import ProgressArtifact


def _transient(task, task_run, state) -> bool:
    """Retry crashes of the machine or the store, not mistakes in the recipe or the data (ValueError), nor a
    full disk (ENOSPC; the library names the path as a DiskFullError, a ValueError, where it can), nor a stage
    that ran past its deadline (it would hang or run as long again)."""
    try:
        state.result()
    except StageCrash as crash:
        return _worth_retrying(crash.__cause__)
    except Exception as err:  # noqa: BLE001 - judged below
        return _worth_retrying(err)
    return False


def _worth_retrying(err: BaseException | None) -> bool:
    if isinstance(err, ValueError | StageTimeout):  # StageMistake, every mistake the library names, a deadline
        return False
    if isinstance(err, OSError):
        return err.errno != errno.ENOSPC
    return True  # anything else may pass on a second try


@contextlib.contextmanager
def _reported(stage: str) -> Iterator[None]:
    """A failure becomes one ERROR line naming the stage, the cause and what to do: the first error a
    reader of the run's log meets, and the task's and flow run's state message (tasks/failures.py)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised, wrapped
        failure = as_stage_failure(stage, err)
        get_run_logger().error("%s", failure)
        raise failure from err


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


def _done(name: str, manifest: Manifest, out: str) -> StageResult:
    logger = get_run_logger()
    if manifest.reused:
        logger.info(
            "%s: reused, finished at %s (%s rows in %.1f s then) -> %s",
            *(name, manifest.created, manifest.rows, manifest.seconds, out),
        )
    else:
        logger.info("%s: %s rows in %.1f s -> %s", name, manifest.rows, manifest.seconds, out)
    return StageResult(out, manifest.reused)


def stage_task(name: str) -> Callable:
    """A stage as the Prefect task `name` (sppo.artifacts.STAGE_NAMES): the function returns the manifest it
    committed to its `out` folder; the task runs it within compute.stage_timeout_s (StageTimeout past it, not
    retried), logs what it did, reports a failure in one line (_reported) and returns a StageResult."""

    def decorate(fn: Callable[..., Manifest]) -> Callable[..., StageResult]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs) -> StageResult:
            given = signature.bind(*args, **kwargs).arguments
            recipe, out = given["recipe"], given["out"]
            with _reported(name), stage_deadline(recipe.compute.stage_timeout_s, name, given.get("iteration", 0)):
                return _done(name, fn(*args, **kwargs), out)

        return task(name=name, **STAGE)(run)

    return decorate


@stage_task("prepare-base")
def prepare_base_task(recipe: RecipeConfig, out: str) -> Manifest:
    return prepare_base(recipe, out)


@stage_task("generate")
def generate_task(recipe: RecipeConfig, policy: str, iteration: int, out: str) -> Manifest:
    c = recipe.compute
    shape = recipe.generate.engine.engine_shape(c.cpus_per_worker, c.gpus_per_worker)
    runner = _runner(c, c.generate_workers, shape)
    progress = ProgressArtifact(f"generate, iteration {iteration}: generation batches done")
    return generate(recipe, policy, iteration, out, runner, progress)


@stage_task("rank")
def rank_task(recipe: RecipeConfig, generations: str, iteration: int, out: str) -> Manifest:
    c = recipe.compute
    runner = _runner(c, c.rank_workers, recipe.judge.engine_shape(c.cpus_per_worker, c.gpus_per_worker))
    return rank(recipe, generations, out, runner)


@stage_task("build-parquet")
def build_dataset_task(recipe: RecipeConfig, preferences: str, iteration: int, out: str) -> Manifest:
    return build_dataset(recipe, preferences, out)


@stage_task("train")
def train_task(recipe: RecipeConfig, dataset: str, policy: str, iteration: int, out: str) -> Manifest:
    progress = ProgressArtifact(f"train: optimizer steps done ({out})")
    return train(recipe, dataset, policy, out, progress, _cluster_launch(recipe.train.launcher))


def _cluster_launch(launcher: str) -> ClusterLaunch | None:
    """Ray Train's launcher for train.launcher 'ray'; None otherwise (the local executor never imports Ray)."""
    if launcher != "ray":
        return None
    from distributed.ray_train import launch_on_cluster

    return launch_on_cluster


@stage_task("evaluate")
def evaluate_task(
    recipe: RecipeConfig, policy: str, reference: str, base: str, iteration: int, out: str, cache: str
) -> Manifest:
    return evaluate(recipe, policy, reference, base, out, cache)
