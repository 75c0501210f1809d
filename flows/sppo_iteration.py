"""The `sppo-iteration` flow: generate -> rank -> build-parquet -> train -> evaluate for one iteration.

Run it from the command line (`make run-iteration ITER=2`), which uses Prefect's temporary local API
unless PREFECT_API_URL points at a server, or deploy it (prefect.yaml) and trigger it from the UI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow

from sppo.config import load_recipe
from sppo.iteration import starting_policy
from sppo.store import RunLayout
from tasks.stages import (
    build_dataset_task,
    evaluate_task,
    generate_task,
    prepare_base_task,
    rank_task,
    train_task,
)

DEFAULT_RECIPE = "configs/cpu-smollm2.yaml"


@flow(name="sppo-iteration")
def sppo_iteration(
    run: str = "default", iteration: int = 1, config: str = DEFAULT_RECIPE, overrides: list[str] | None = None
) -> str:
    """Train pi_{iteration} from pi_{iteration-1}; returns the folder holding metrics.json."""
    recipe = load_recipe(config, overrides or [])
    layout = RunLayout(Path(recipe.store), run)
    if iteration == 1:
        prepare_base_task(recipe, str(layout.model_dir(0)))
    policy = str(starting_policy(layout, iteration))
    generations = generate_task(recipe, policy, iteration, str(layout.stage_dir(iteration, "generate")))
    preferences = rank_task(recipe, generations, str(layout.stage_dir(iteration, "rank")))
    dataset = build_dataset_task(recipe, preferences, str(layout.stage_dir(iteration, "dataset")))
    model = train_task(recipe, dataset, policy, str(layout.model_dir(iteration)))
    return evaluate_task(
        recipe,
        model,
        policy,
        str(layout.model_dir(0)),
        str(layout.stage_dir(iteration, "evaluate")),
        str(layout.root / run / "eval-answers"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default", help="run name: artifacts go to <store>/<run>/")
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--config", default=DEFAULT_RECIPE, help="recipe YAML")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a recipe field, e.g. --set train.learning_rate=1e-6",
    )
    args = parser.parse_args(argv)
    try:
        out = sppo_iteration(run=args.run, iteration=args.iteration, config=args.config, overrides=args.overrides)
    except ValueError as err:  # a mistake in the recipe, the data or the order of iterations: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"iteration {args.iteration} of run {args.run!r} done; metrics: {Path(out) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
