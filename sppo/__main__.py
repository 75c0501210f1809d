"""`python -m sppo prepare-base`: write a run's base model (iteration 0) without starting Prefect,
so `make setup` leaves a ready model behind."""

from __future__ import annotations

import argparse
import sys

from sppo.config import ConfigError, load_recipe
from sppo.stages.base import prepare_base
from sppo.store import ArtifactStore, RunLayout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sppo")
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("prepare-base", help="write <store>/<run>/iter-000/model from the recipe's model.base")
    base.add_argument("--run", default="default")
    base.add_argument("--config", default="configs/cpu-smollm2.yaml")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = RunLayout(ArtifactStore(recipe.store), args.run).model_url(0)
    manifest = prepare_base(recipe, out)
    print(f"base model {manifest.info.get('source')} ready at {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
