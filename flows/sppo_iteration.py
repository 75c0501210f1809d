"""The `sppo-iteration` flow: generate -> rank -> build-parquet -> train -> evaluate for one iteration.

Run it from the command line (`make run-iteration ITER=2`), which uses Prefect's temporary local API
unless PREFECT_API_URL points at a server, or deploy it (prefect.yaml) and trigger it from the UI."""

from __future__ import annotations

import argparse
import functools
import sys

from prefect import flow

from flows.cli import run_command
from sppo.config import check_remote_code_overrides, load_recipe
from sppo.iteration import iteration_lock, starting_policy
from sppo.names import RUN_NAME_PATTERN
from sppo.preflight import preflight
from sppo.store import RunLayout
from tasks.artifacts import publish_unless_published
from tasks.stages import (
    build_dataset_task,
    evaluate_task,
    generate_task,
    prepare_base_task,
    rank_task,
    train_task,
)

DEFAULT_RECIPE = "configs/cpu-smollm2.yaml"


# Flow runs are named after what they do (`smoke-iter-002`), not Prefect's random `quaint-alligator`.
@flow(name="sppo-iteration", flow_run_name="{run}-iter-{iteration:03d}")
def sppo_iteration(
    run: str = "default",
    iteration: int = 1,
    config: str = DEFAULT_RECIPE,
    overrides: list[str] | None = None,
    lock_wait_seconds: float = 0.0,
) -> str:
    """Train pi_{iteration} from pi_{iteration-1}; returns the URL of the folder holding metrics.json."""
    check_remote_code_overrides(overrides or [])
    recipe = load_recipe(config, overrides or [])
    preflight(recipe, run, iteration)  # also when started from a deployment: a mistake fails before any task
    layout = RunLayout(recipe.open_store(), run)
    stage = functools.partial(layout.stage_url, iteration)
    # One writer per run and iteration; a re-run after a crash takes over a dead writer's lock.
    with iteration_lock(layout.store, layout.lock_url(iteration), lock_wait_seconds):
        if iteration == 1:
            prepare_base_task(recipe, layout.model_url(0))
        policy = starting_policy(layout, iteration)
        generations = generate_task(recipe, policy, iteration, stage("generate"))
        preferences = rank_task(recipe, generations.url, stage("rank"))
        dataset = build_dataset_task(recipe, preferences.url, stage("dataset"))
        model = train_task(recipe, dataset.url, policy, stage("model"))
        metrics = evaluate_task(recipe, model.url, policy, layout.model_url(0), stage("evaluate"), layout.answers_url())
    # The UI's artifacts for this iteration: published by the run that did its work, not by a re-run, unless
    # that run failed to publish them.
    did_work = not all(s.reused for s in (generations, preferences, dataset, model, metrics))
    publish_unless_published(recipe.store, run, iteration, did_work, recipe.publish.presign_seconds)
    return metrics.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", default="default", help=f"run name ({RUN_NAME_PATTERN}): artifacts go to <store>/<run>/"
    )
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--config", default=DEFAULT_RECIPE, help="recipe YAML")
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another writer of the same iteration instead of failing at once",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a recipe field, e.g. --set train.learning_rate=1e-6",
    )
    args = parser.parse_args(argv)

    def run() -> str:
        out = sppo_iteration(
            run=args.run,
            iteration=args.iteration,
            config=args.config,
            overrides=args.overrides,
            lock_wait_seconds=args.lock_wait,
        )
        return f"iteration {args.iteration} of run {args.run!r} done; metrics: {out}/metrics.json"

    validate = lambda: preflight(load_recipe(args.config, args.overrides), args.run, args.iteration)  # noqa: E731
    return run_command(f"iteration-{args.iteration}", validate, run)


if __name__ == "__main__":
    sys.exit(main())
