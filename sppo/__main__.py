"""`python -m sppo`: small commands that need neither Prefect nor Ray.

prepare-base writes a run's base model (iteration 0) so `make setup` leaves a ready model behind;
doctor says what the machine offers and what the recipe will use (sppo.doctor);
diagnose measures what an iteration's data taught and how far it moved the policy (sppo.diagnose);
runs / show / compare / best inspect a store (see sppo.runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sppo import runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sppo")
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("prepare-base", help="write <store>/<run>/iter-000/model from the recipe's model.base")
    base.add_argument("--run", default="default")
    base.add_argument("--config", default="configs/cpu-smollm2.yaml")
    doctor = sub.add_parser("doctor", help="what this machine offers and what the recipe will use on it")
    doctor.add_argument("--run", default="default")
    doctor.add_argument("--config", default="configs/cpu-smollm2.yaml")
    diagnose = sub.add_parser("diagnose", help="what an iteration's data taught and how far it moved the policy")
    diagnose.add_argument("run")
    diagnose.add_argument("iteration", type=int)
    diagnose.add_argument("--config", default="configs/cpu-smollm2.yaml", help="the recipe the run used")
    diagnose.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    diagnose.add_argument("--data-only", action="store_true", help="skip the two models' forward passes")
    diagnose.add_argument("--json", type=Path, help="also write the numbers here")
    runs.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return cmd_doctor(args)
    if args.command == "diagnose":
        return cmd_diagnose(args)
    if args.command != "prepare-base":
        return runs.run_command(args)
    return cmd_prepare_base(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sppo.config import load_recipe
    from sppo.doctor import report
    from sppo.store import RunLayout

    try:
        recipe = load_recipe(args.config)
        store = recipe.open_store()
        base = RunLayout(store, args.run).model_url(0)
        model_dir = Path(store.path_of(base)) if store.is_local and store.exists(f"{base}/config.json") else None
        print("\n".join(report(recipe, model_dir)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from sppo.config import load_recipe
    from sppo.diagnose import diagnose, render, write_json
    from sppo.store import RunLayout

    try:
        recipe = load_recipe(args.config, args.overrides)
        report = diagnose(recipe, RunLayout(recipe.open_store(), args.run), args.iteration, not args.data_only)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        write_json(report, args.json)
    return 0


def cmd_prepare_base(args: argparse.Namespace) -> int:
    from sppo.config import load_recipe
    from sppo.iteration import IterationLocked, iteration_lock
    from sppo.revisions import pin_revisions
    from sppo.sources import require_model_source
    from sppo.store import RunLayout

    try:
        recipe = pin_revisions(load_recipe(args.config), args.run)  # the hub base at the run's pinned commit
        layout = RunLayout(recipe.open_store(), args.run)
        out = layout.model_url(0)
        require_model_source(recipe.model.base)
        from sppo.stages.base import prepare_base  # imports torch: only when needed

        # The iteration-1 flow writes the base too, through the same scratch folder: one writer at a time.
        with iteration_lock(layout.store, layout.lock_url(0)):
            manifest = prepare_base(recipe, out)
    except (ValueError, IterationLocked) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"base model {manifest.info.get('source')} ready at {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
