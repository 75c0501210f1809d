"""The `sppo-campaign` flow: iterations 1..N of one run, each a `sppo-iteration` subflow. Re-running it
resumes: finished stages are skipped by their manifests.

`--losses sppo dpo sppo_hard` runs one campaign per loss (runs `<run>-<loss>`, same recipe and data
otherwise; iteration 1's generate, rank and dataset are sampled once and copied to the later runs)
and `--report PATH` writes the side-by-side report (PATH.md and PATH.png)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow

from flows.cli import run_command
from flows.sppo_iteration import DEFAULT_RECIPE, sppo_iteration
from sppo.config import check_remote_code_overrides, load_recipe
from sppo.iteration import share_first_iteration
from sppo.preflight import preflight
from sppo.report import write_report


@flow(name="sppo-campaign", flow_run_name="{run}-iters-1-{iterations}")
def sppo_campaign(
    run: str = "default", iterations: int = 3, config: str = DEFAULT_RECIPE, overrides: list[str] | None = None
) -> list[str]:
    """Returns the URLs of each iteration's evaluate folder."""
    check_remote_code_overrides(overrides or [])
    preflight(load_recipe(config, overrides or []), run, 1)
    return [
        sppo_iteration(run=run, iteration=t, config=config, overrides=overrides or []) for t in range(1, iterations + 1)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--config", default=DEFAULT_RECIPE)
    parser.add_argument("--losses", nargs="+", metavar="LOSS", help="one campaign per loss, as runs <run>-<loss>")
    parser.add_argument("--report", type=Path, metavar="PATH", help="write PATH.md and PATH.png across the runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    runs = {loss: f"{args.run}-{loss.replace('_', '-')}" for loss in args.losses} if args.losses else {"": args.run}
    first_run = next(iter(runs.values()))

    def validate() -> None:
        if args.iterations < 1:
            raise ValueError(f"--iterations must be at least 1, got {args.iterations}")
        for loss, run in runs.items():
            preflight(
                load_recipe(args.config, [*args.overrides, *([f"train.loss.type={loss}"] if loss else [])]), run, 1
            )

    def run_all() -> str:
        store = load_recipe(args.config, args.overrides).open_store()
        for loss, run in runs.items():
            extra = [f"train.loss.type={loss}"] if loss else []  # the recipe's beta stays
            if run != first_run:
                share_first_iteration(store, first_run, run)  # iteration 1's data do not depend on the loss
            sppo_campaign(run=run, iterations=args.iterations, config=args.config, overrides=[*args.overrides, *extra])
        if not args.report:
            return f"campaign done: runs {', '.join(runs.values())}"
        recipe = load_recipe(args.config, args.overrides)
        notes = (
            f"Recipe `{args.config}`{' with ' + ', '.join(args.overrides) if args.overrides else ''}; "
            f"{recipe.data.eval_prompts} held-out prompts judged by the {recipe.judge.type} judge. "
            "Win rates count ties as 1/2; 'similar length' keeps prompts where the two answers' "
            "word counts are within 20%."
        )
        runs_by_label = {loss or run: run for loss, run in runs.items()}
        path = write_report(store, runs_by_label, args.report, title="SPPO on CPU: results", notes=notes)
        return f"report: {path}"

    return run_command(f"campaign-{args.run}", validate, run_all)


if __name__ == "__main__":
    sys.exit(main())
