"""The `python -m sppo runs | show | compare | best` subcommands: add_parsers adds them to the parser,
run_command runs one and turns user errors into `error: ...` and exit code 2 (a corrupt artifact: 1)."""

from __future__ import annotations

import argparse
import json
import sys

from sppo.artifacts import STAGES
from sppo.names import InvalidNameError
from sppo.runs.best import check_best, mark_best
from sppo.runs.render import lock_text, render_compare, render_iteration, render_runs, render_stage, table
from sppo.runs.status import (
    CORRUPT,
    DONE,
    MISSING,
    NA,
    RunsError,
    answer_cache_problems,
    best_url,
    iteration_status,
    list_runs,
    parse_iteration,
    read_best,
    read_manifest,
    require_iteration,
    require_run,
    run_status,
    where,
)
from sppo.store import ArtifactStore, CorruptArtifactError, RunLayout


def add_parsers(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="store root: a folder or s3://bucket/prefix (default: artifacts)")
    common.add_argument("--config", help="read the store from this recipe's `store` (--store wins)")
    p = sub.add_parser("runs", parents=[common], help="list runs, their iterations and each stage's status")
    p.add_argument("run", nargs="?", help="only this run")
    p = sub.add_parser("show", parents=[common], help="print a stage's manifest (and evaluate's metrics)")
    p.add_argument("run")
    p.add_argument("iteration", help="1, 001 or iter-001")
    p.add_argument("stage", nargs="?", choices=STAGES, help="one stage in full (default: all, compact)")
    p.add_argument("--samples", action="store_true", help="also print evaluate's sample answers")
    p = sub.add_parser("compare", parents=[common], help="win rates, constraints, length and loss per iteration")
    p.add_argument("run")
    p = sub.add_parser("verify", parents=[common], help="check every finished stage's files against its sha256s")
    p.add_argument("run")
    p.add_argument("iteration", nargs="?", help="only this iteration")
    p = sub.add_parser("best", parents=[common], help="mark ITER's model as the run's best, or check the mark")
    p.add_argument("run")
    p.add_argument("iteration", nargs="?", help="mark this iteration (omit to print and check the current mark)")


def open_store(args: argparse.Namespace) -> ArtifactStore:
    root = args.store
    if root is None and args.config:
        from sppo.config import ConfigError, load_recipe

        try:
            root = load_recipe(args.config).store
        except ConfigError as err:
            raise RunsError(str(err)) from None
    return ArtifactStore(root or "artifacts")


def run_command(args: argparse.Namespace) -> int:
    """Run one of runs / show / compare / best; user errors print `error: ...` and return 2."""
    try:
        store = open_store(args)
        return _COMMANDS[args.command](store, args)
    except (RunsError, InvalidNameError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CorruptArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _runs(store: ArtifactStore, args: argparse.Namespace) -> int:
    names = [args.run] if args.run else list_runs(store)
    print(render_runs(store, [run_status(store, name) for name in names]))
    return 0


def _show(store: ArtifactStore, args: argparse.Namespace) -> int:
    iteration = parse_iteration(args.iteration)
    require_iteration(store, args.run, iteration)
    if args.stage:
        print(render_stage(store, args.run, iteration, args.stage, args.samples))
    else:
        print(render_iteration(store, args.run, iteration, args.samples))
    return 0


def _compare(store: ArtifactStore, args: argparse.Namespace) -> int:
    text, warnings = render_compare(store, args.run)
    print(text)
    for warning in warnings:
        print(warning, file=sys.stderr)
    return 0


def _verify(store: ArtifactStore, args: argparse.Namespace) -> int:
    """Every finished stage's files against their manifest's sha256, and the answer cache's checksums."""
    status = run_status(store, args.run)
    wanted = parse_iteration(args.iteration) if args.iteration is not None else None
    if wanted is not None:
        require_iteration(store, args.run, wanted)
    layout = RunLayout(store, args.run)
    rows, bad = [], 0
    for it in status.iterations:
        if wanted is not None and it.iteration != wanted:
            continue
        for stage in STAGES:
            if it.stages[stage] in (NA, MISSING):
                continue
            url = layout.stage_url(it.iteration, stage)
            state, manifest = read_manifest(store, url)
            problem = store.stage_problem(url, manifest, hashes=True) if manifest else None
            state = CORRUPT if problem else state
            bad += state == CORRUPT
            rows.append([f"{it.iteration:03d}", stage, state, problem or ("-" if state == DONE else "no manifest")])
    for name, problem in answer_cache_problems(store, args.run):
        bad += 1
        rows.append(["-", f"eval-answers/{name}", CORRUPT, problem])
    print(f"run {args.run} in {where(store)}: {len(rows)} item(s) checked, {bad} corrupt")
    print(table(["iter", "stage", "status", "problem"], rows))
    if bad:
        print(
            f"error: {bad} corrupt item(s) in run {args.run}: rerun their iterations "
            f"(make run-iteration ITER=N RUN={args.run}), which redoes them",
            file=sys.stderr,
        )
    return 1 if bad else 0


def _best(store: ArtifactStore, args: argparse.Namespace) -> int:
    if args.iteration is not None:
        iteration = parse_iteration(args.iteration)
        pointer = mark_best(store, args.run, iteration)
        print(f"marked iter-{iteration:03d} as the best of run {args.run}: {best_url(store, args.run)}")
        print(json.dumps(pointer, indent=2))
        status = iteration_status(
            store, args.run, iteration, store.exists(f"{RunLayout(store, args.run).iteration_url(iteration)}.lock")
        )
        if status.locked:
            print(f"warning: {lock_text(status)}; its model may still be replaced", file=sys.stderr)
        if iteration and status.stages["evaluate"] != DONE:
            print(f"warning: iteration {iteration} has no finished evaluate stage yet", file=sys.stderr)
        return 0
    require_run(store, args.run)
    pointer = read_best(store, args.run)
    if pointer is None:
        raise RunsError(
            f"run {args.run!r} in store {where(store)} has no best iteration marked; "
            f"mark one with `python -m sppo best {args.run} ITER`"
        )
    print(json.dumps(pointer, indent=2))
    problems = check_best(store, args.run, pointer)
    for problem in problems:
        print(f"WARNING: best pointer is stale: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"ok: iter-{pointer['iteration']:03d}'s model manifest still matches (sha256 {pointer['manifest_sha256'][:12]})"
    )
    return 0


_COMMANDS = {"runs": _runs, "show": _show, "compare": _compare, "verify": _verify, "best": _best}
