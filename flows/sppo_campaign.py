"""The `sppo-campaign` flow: iterations 1..N of one run, each a `sppo-iteration` subflow. Re-running it
resumes: finished stages are skipped by their manifests.

`--losses sppo dpo sppo_hard` runs one campaign per loss (runs `<run>-<loss>`, same recipe and data
otherwise; iteration 1's generate, rank and dataset are sampled once and copied to the later runs);
`--seeds N` repeats that for seeds 0..N-1 (runs `<run>-s<seed>-<loss>`: generate.seed and train.seed set to
the seed, the base model shared, iteration 1 sampled once per seed), and `--report PATH` writes the report
over losses and seeds (PATH.md and PATH.png; sppo.seed_report)."""

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
from sppo.revisions import pin_revisions
from sppo.seed_report import held_out_prompts, write_seed_report


@flow(name="sppo-campaign", flow_run_name="{run}-iters-1-{iterations}")
def sppo_campaign(
    run: str = "default", iterations: int = 3, config: str = DEFAULT_RECIPE, overrides: list[str] | None = None
) -> list[str]:
    """Returns the URLs of each iteration's evaluate folder."""
    check_remote_code_overrides(overrides or [])
    preflight(pin_revisions(load_recipe(config, overrides or []), run), run, 1)
    return [
        sppo_iteration(run=run, iteration=t, config=config, overrides=overrides or []) for t in range(1, iterations + 1)
    ]


def campaign_runs(run: str, losses: list[str] | None, seeds: int) -> dict[str, list[str]]:
    """Loss label ("" without --losses) -> its run per seed, in seed order."""
    labels = losses or [""]

    def name(loss: str, seed: int) -> str:
        parts = [run, *([f"s{seed}"] if seeds > 1 else []), *([loss.replace("_", "-")] if loss else [])]
        return "-".join(parts)

    return {loss: [name(loss, seed) for seed in range(seeds)] for loss in labels}


def seed_overrides(seeds: int, seed: int) -> list[str]:
    # One seed keeps the recipe's own seeds, so a single-seed campaign is the runs it always was.
    return [f"generate.seed={seed}", f"train.seed={seed}"] if seeds > 1 else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--config", default=DEFAULT_RECIPE)
    parser.add_argument("--losses", nargs="+", metavar="LOSS", help="one campaign per loss, as runs <run>-<loss>")
    parser.add_argument("--seeds", type=int, default=1, help="repeat every campaign for seeds 0..N-1")
    parser.add_argument("--report", type=Path, metavar="PATH", help="write PATH.md and PATH.png across the runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    runs = campaign_runs(args.run, args.losses, args.seeds)
    first_run = runs[next(iter(runs))][0]

    def overrides_of(loss: str, seed: int) -> list[str]:
        # The recipe's beta stays whatever the loss.
        return [*args.overrides, *seed_overrides(args.seeds, seed), *([f"train.loss.type={loss}"] if loss else [])]

    def validate() -> None:
        if args.iterations < 1 or args.seeds < 1:
            raise ValueError(f"--iterations and --seeds must be at least 1, got {args.iterations} and {args.seeds}")
        for loss, seeds in runs.items():
            for seed, run in enumerate(seeds):
                preflight(pin_revisions(load_recipe(args.config, overrides_of(loss, seed)), run), run, 1)

    def run_all() -> str:
        store = load_recipe(args.config, args.overrides).open_store()
        for seed in range(args.seeds):
            seed_first = runs[next(iter(runs))][seed]
            for loss, seeds in runs.items():
                run = seeds[seed]
                if run != seed_first:  # iteration 1's data do not depend on the loss
                    share_first_iteration(store, seed_first, run)
                elif run != first_run:  # nor the base model on the seed
                    share_first_iteration(store, first_run, run, data=False)
                sppo_campaign(
                    run=run, iterations=args.iterations, config=args.config, overrides=overrides_of(loss, seed)
                )
        if not args.report:
            return f"campaign done: runs {', '.join(r for seeds in runs.values() for r in seeds)}"
        return f"report: {report(args, runs, store)}"

    return run_command(f"campaign-{args.run}", validate, run_all)


def report(args: argparse.Namespace, runs: dict[str, list[str]], store) -> Path:
    recipe = load_recipe(args.config, args.overrides)
    notes = (
        f"Recipe `{args.config}`{' with ' + ', '.join(args.overrides) if args.overrides else ''}; "
        f"{recipe.data.eval_prompts} held-out prompts judged by the {recipe.evaluation_judge.type} judge; "
        f"{args.seeds} seed(s) (generate.seed and train.seed), iteration 1 sampled once per seed and shared "
        "by the losses."
    )
    labels = {loss or seeds[0]: seeds for loss, seeds in runs.items()}
    prompts = held_out_prompts(recipe, store, next(iter(labels.values()))[0])
    judge = recipe.evaluation_judge.build(recipe.precision)
    return write_seed_report(
        store,
        labels,
        prompts,
        judge,
        args.report,
        title="SPPO on CPU: results",
        notes=notes,
        holdout_types=recipe.data.holdout_constraint_types,
    )


if __name__ == "__main__":
    sys.exit(main())
