"""The `sppo-iteration` flow: generate -> rank -> build-parquet -> train -> evaluate for one iteration.

Run it from the command line (`make run-iteration ITER=2`), which uses Prefect's temporary local API
unless PREFECT_API_URL points at a server, or deploy it (prefect.yaml) and trigger it from the UI.
`iteration: next` (`ITER=next`, what the schedules use) works on the run's first unfinished iteration, up to
the recipe's max_iterations."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Literal

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.cli import run_command
from sppo.config import check_remote_code_overrides, load_recipe
from sppo.iteration import iteration_lock, next_iteration, starting_policy
from sppo.names import RUN_NAME_PATTERN
from sppo.preflight import preflight
from sppo.revisions import pin_revisions
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
IterationChoice = int | Literal["next"]


def run_name(run: str, iteration: IterationChoice) -> str:
    """Flow runs are named after what they do (`smoke-iter-002`), not Prefect's random `quaint-alligator`."""
    return f"{run}-iter-{iteration:03d}" if isinstance(iteration, int) else f"{run}-iter-{iteration}"


def _flow_run_name() -> str:
    return run_name(flow_run.parameters["run"], flow_run.parameters["iteration"])


def _rename_flow_run(name: str) -> None:
    """`default-iter-next` becomes the iteration it resolved to, as the UI lists it from then on."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=name)


@flow(name="sppo-iteration", flow_run_name=_flow_run_name)
def sppo_iteration(
    run: str = "default",
    iteration: IterationChoice = 1,
    config: str = DEFAULT_RECIPE,
    overrides: list[str] | None = None,
    lock_wait_seconds: float = 0.0,
) -> str | State:
    """Train pi_{iteration} from pi_{iteration-1}; returns the URL of the folder holding metrics.json."""
    check_remote_code_overrides(overrides or [])
    # The hub's prompts and base at the commits this run pinned on first use, whatever moved upstream since.
    recipe = pin_revisions(load_recipe(config, overrides or []), run)
    layout = RunLayout(recipe.open_store(), run)
    if iteration == "next":
        chosen = next_iteration(layout, recipe.max_iterations)
        if chosen is None:
            return Completed(message=nothing_left(run, recipe.max_iterations))
        iteration = chosen
        _rename_flow_run(run_name(run, iteration))
    preflight(recipe, run, iteration)  # also when started from a deployment: a mistake fails before any task
    stage = functools.partial(layout.stage_url, iteration)
    # One writer per run and iteration; a re-run after a crash takes over a dead writer's lock.
    with iteration_lock(layout.store, layout.lock_url(iteration), lock_wait_seconds):
        if iteration == 1:
            prepare_base_task(recipe, layout.model_url(0))
        policy = starting_policy(layout, iteration)
        generations = generate_task(recipe, policy, iteration, stage("generate"))
        preferences = rank_task(recipe, generations.url, iteration, stage("rank"))
        dataset = build_dataset_task(recipe, preferences.url, iteration, stage("dataset"))
        model = train_task(recipe, dataset.url, policy, iteration, stage("model"))
        base, answers = layout.model_url(0), layout.answers_url()
        metrics = evaluate_task(recipe, model.url, policy, base, iteration, stage("evaluate"), answers)
    # The UI's artifacts for this iteration: published by the run that did its work, not by a re-run, unless
    # that run failed to publish them.
    did_work = not all(s.reused for s in (generations, preferences, dataset, model, metrics))
    publish_unless_published(recipe.store, run, iteration, did_work, recipe.publish.presign_seconds)
    return metrics.url


def nothing_left(run: str, max_iterations: int) -> str:
    return (
        f"run {run!r} has finished all {max_iterations} iterations of its recipe (max_iterations): nothing to do; "
        "raise max_iterations to go on"
    )


def parse_iteration(text: str) -> IterationChoice:
    if text == "next":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'next', got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", default="default", help=f"run name ({RUN_NAME_PATTERN}): artifacts go to <store>/<run>/"
    )
    parser.add_argument(
        "--iteration",
        type=parse_iteration,
        default=1,
        help="a number, or 'next': the run's first unfinished iteration up to the recipe's max_iterations",
    )
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
        state = sppo_iteration(
            run=args.run,
            iteration=args.iteration,
            config=args.config,
            overrides=args.overrides,
            lock_wait_seconds=args.lock_wait,
            return_state=True,
        )
        out = state.result()  # raises what failed the run
        if out is None:  # `next` past max_iterations
            return state.message
        return f"run {args.run!r}: iteration done; metrics: {out}/metrics.json"  # the URL names the iteration

    def validate() -> None:
        recipe = pin_revisions(load_recipe(args.config, args.overrides), args.run)
        iteration = args.iteration
        if iteration == "next":
            iteration = next_iteration(RunLayout(recipe.open_store(), args.run), recipe.max_iterations)
        if iteration is not None:
            preflight(recipe, args.run, iteration)

    return run_command(f"iteration-{args.iteration}", validate, run)


if __name__ == "__main__":
    sys.exit(main())
