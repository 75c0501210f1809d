"""The pipeline as a user runs it: the `make run-iteration` command line, timed from outside.

- orchestration: flow wall time minus the stages' own compute (each stage manifest's `seconds`: the stage's
  work, model loading included, from its first input read to its last output file), as a share of the wall
  time, for the smoke and the default recipe; and the cold start, from the command's start until the first
  stage that computes begins.
- scaling: each stage's seconds at 1x, 2x and 4x the prompts (linear is 2x and 4x).
- ray: the generate and rank stages on the Ray executor with 1 and 2 workers, each worker on its share of the
  cores (`threads`).

Every command gets a fresh store and Prefect home (a cold start: Prefect creates its database). The default
recipe's base model is copied in from --model's stage folder (as after `make setup`), so prepare-base is reused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.context import DEFAULT_RECIPE, LOGS, REPO, SMOKE_RECIPE, Context
from bench.limits import iteration_limits
from bench.report import Row

# Stage folders of an iteration, by the names the table uses.
STAGES = {"generate": "generate", "rank": "rank", "dataset": "build_parquet", "model": "train", "evaluate": "evaluate"}
# `<stage>: <rows> rows in <seconds> s -> <url>`, logged by tasks/stages.py when a stage has computed.
_STAGE_DONE = re.compile(r"Task run '[^']+' - \S+: \S+ rows in ([0-9.]+) s -> ")
BUDGET_MINUTES, BUDGET_GFLOPS = 10.0, 150.0  # the issue: 10 min for the default iteration at 150 GFLOP/s

# Each stage and the whole default iteration as a multiple of its compute limit (bench.limits), with the targets
# of issue 15 (ratios of seconds to the limit at the best native GEMM rate).
LIMIT_TARGETS = {"generate": "<= 2.5x", "model": "<= 2.5x", "evaluate": "<= 3x", "iteration": "<= 3x"}
LIMIT_FIGURES = tuple(f"default_{STAGES.get(k, k)}_x_limit" for k in LIMIT_TARGETS)

ORCHESTRATION_FIGURES = (
    "smoke_overhead_s",
    "smoke_cold_start_s",
    "default_overhead_s",
    "default_cold_start_s",
    "default_iteration_min",
    *LIMIT_FIGURES,
)
SCALING_FIGURES = tuple(f"{s}_{x}" for s in (*STAGES.values(), "flow") for x in ("2x", "4x"))
RAY_FIGURES = ("generate_2_workers", "rank_2_workers")


def seed_base_model(model: Path, store: Path, run: str) -> bool:
    """Copy the prepared base model's stage (its manifest unchanged) into `run` of `store`; False when `model`
    is no stage folder (no manifest.json), in which case the flow's prepare-base makes it."""
    if not (model / "manifest.json").is_file():
        return False
    from sppo.store import ArtifactStore

    target = ArtifactStore(str(store))
    target.copy_stage(str(model.resolve()), target.join(run, "iter-000", "model"))
    return True


def run_iteration(config: str, overrides: list[str], store: Path, run: str, log: Path) -> dict:
    """`python -m flows.sppo_iteration` as `make run-iteration` runs it; wall time, when each output line
    arrived, and each stage's manifest seconds."""
    home = store.parent / f"prefect-{run}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "sppo",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("PREFECT_API_URL", None)  # Prefect's temporary local API, as on a machine without a server
    flags = ["--run", run, "--iteration", "1", "--config", config]
    flags += [a for o in [*overrides, f"store={store}"] for a in ("--set", o)]
    command = [sys.executable, "-m", "flows.sppo_iteration", *flags]
    log.parent.mkdir(parents=True, exist_ok=True)
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    with (
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
        log.open("w", buffering=1) as out,  # line by line: a running flow can be followed
    ):
        for line in proc.stdout:  # tqdm's \r redraws arrive as lines too (universal newlines)
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            out.write(f"{lines[-1][0]:9.3f} {lines[-1][1]}\n")
        code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        tail = " | ".join(text for _, text in lines[-5:])
        raise RuntimeError(f"flows.sppo_iteration {' '.join(flags)} exited with {code} (log {log}): {tail[-400:]}")
    return {"wall_s": wall, "stages": stage_seconds(store, run), "timeline": timeline(lines)}


def stage_seconds(store: Path, run: str) -> dict[str, float]:
    """Seconds of each stage of iteration 1, from its manifest."""
    stages = store / run / "iter-001"
    return {
        name: json.loads((stages / folder / "manifest.json").read_text())["seconds"] for folder, name in STAGES.items()
    }


def timeline(lines: list[tuple[float, str]]) -> dict[str, float | None]:
    """Seconds after the command started when its first line came (Python imports, recipe checks), the flow
    began (Prefect's temporary API up), the first computing stage began (its done line's arrival minus its
    seconds; a reused stage computes nothing and is passed over) and the last stage was done. Lines are timed
    as they arrive (ms resolution; the stages' lines carry their seconds to 0.1 s)."""
    done = [(t, float(m.group(1))) for t, text in lines if (m := _STAGE_DONE.search(text))]
    return {
        "first_output_s": lines[0][0] if lines else None,
        "flow_begins_s": next((t for t, text in lines if "Beginning flow run" in text), None),
        "first_stage_begins_s": done[0][0] - done[0][1] if done else None,
        "last_stage_done_s": done[-1][0] if done else None,
    }


def _iteration_in_fresh_store(ctx: Context, name: str, config: str, overrides: list[str], copy_base: bool) -> dict:
    store = ctx.work / name / "store"
    store.mkdir(parents=True)
    copied = copy_base and seed_base_model(ctx.model, store, name)
    result = run_iteration(config, overrides, store, name, LOGS / f"{name}.log")
    base = json.loads((store / name / "iter-000" / "model" / "manifest.json").read_text())
    # A copied base model is reused unless its recipe fingerprint is stale (made by older code): then the flow
    # made it again, and that is a stage's compute too.
    result["base_model_reused"] = copied and base == json.loads((ctx.model / "manifest.json").read_text())
    if not result["base_model_reused"]:
        result["stages"]["prepare_base"] = base["seconds"]
    # What the iteration achieved, kept for the quality check beside its speed (the store is deleted next).
    metrics = json.loads((store / name / "iter-001" / "evaluate" / "metrics.json").read_text())
    result["vs_base"] = {k: v for k, v in metrics["vs_base"].items() if k in ("win_rate", "ci95_low", "ci95_high", "n")}
    result["limits"] = iteration_limits(store / name / "iter-001", store / name / "iter-000" / "model", ctx.best_gflops)
    shutil.rmtree(store, ignore_errors=True)  # models are 0.5 GB each
    return result


def measure_orchestration(ctx: Context) -> dict:
    default_overrides = list(ctx.sizes.default_overrides)
    smoke = _iteration_in_fresh_store(ctx, "smoke", SMOKE_RECIPE, [], copy_base=False)
    default = _iteration_in_fresh_store(ctx, "default", DEFAULT_RECIPE, default_overrides, copy_base=True)
    rows = []
    for name, result in (("smoke", smoke), ("default", default)):
        wall, compute = result["wall_s"], sum(result["stages"].values())
        stale = name == "default" and not result["base_model_reused"]
        rows += [
            Row(
                f"{name}_overhead_s",
                wall - compute,
                "s",
                "flow wall",
                wall,
                ratio_unit="%",
                target="< 5%" if name == "default" else "",
                note=f"flow wall {wall:.1f} s minus the stages' manifest seconds {compute:.1f} s"
                + (", base model made again (the copy's fingerprint was stale)" if stale else ""),
            ),
            Row(
                f"{name}_cold_start_s",
                result["timeline"]["first_stage_begins_s"],
                "s",
                "flow wall",
                wall,
                ratio_unit="%",
                note="command start to the first computing stage: imports, Prefect's temporary API, checks, lock",
            ),
        ]
    budget = BUDGET_MINUTES * BUDGET_GFLOPS / ctx.gemm_gflops
    reduced = f"reduced recipe ({' '.join(default_overrides)}): no budget" if default_overrides else ""
    rows.append(
        Row(
            "default_iteration_min",
            default["wall_s"] / 60,
            "min",
            "budget",
            budget,
            target="" if default_overrides else "<= 1x",
            note=reduced or f"budget = 10 min x 150 / {ctx.gemm_gflops:.0f} GFLOP/s (this run's GEMM)",
        )
    )
    for key, target in LIMIT_TARGETS.items():
        stage = default["limits"][key]
        rows.append(
            Row(
                f"default_{STAGES.get(key, key)}_x_limit",
                stage["seconds"],
                "s",
                "compute limit",
                stage["limit_s"],
                target="" if default_overrides else target,
                note=f"{stage['tflop']:.2f} TFLOP at {ctx.best_gflops:.0f} GFLOP/s (best native GEMM, bench.limits)",
            )
        )
    return {"rows": rows, "details": {"smoke": smoke, "default": default, "default_overrides": default_overrides}}


def measure_scaling(ctx: Context) -> dict:
    s = ctx.sizes
    copy_base = s.scaling_recipe == DEFAULT_RECIPE
    runs = {}
    for n in s.scaling_prompts:
        overrides = [*s.scaling_overrides, f"data.prompts_per_iteration={n}"]
        runs[n] = _iteration_in_fresh_store(ctx, f"scale-{n}", s.scaling_recipe, overrides, copy_base)
        runs[n]["stages"]["flow"] = runs[n]["wall_s"]
    one, *more = s.scaling_prompts
    notes = {
        "generate": f"{' and '.join(map(str, more))} prompts vs {one}: linear is 2x and 4x",
        "evaluate": "the held-out prompts stay the same: flat is expected",
    }
    rows = [
        Row(f"{stage}_{label}", runs[n]["stages"][stage], "s", f"{one} prompts", runs[one]["stages"][stage], note=note)
        for stage in (*STAGES.values(), "flow")
        for n, label, note in zip(more, ("2x", "4x"), (notes.get(stage, ""), ""), strict=True)
    ]
    details = {"recipe": s.scaling_recipe, "overrides": list(s.scaling_overrides), "runs": runs}
    return {"rows": rows, "details": details}


def stages_on_ray(config: str, overrides: list[str], store: str, run: str, workers: int, threads: int) -> dict:
    """generate and rank of iteration 1 on `workers` Ray actors (a local Ray started here); their manifest seconds.
    Runs in its own process (bench.pipeline.measure_ray starts it), so each worker count gets a fresh Ray."""
    from distributed.ray_pool import RayRunner
    from sppo.config import load_recipe
    from sppo.stages.base import prepare_base
    from sppo.stages.generate import generate
    from sppo.stages.rank import rank
    from sppo.store import RunLayout

    compute = ["compute.executor=ray", f"compute.generate_workers={workers}", f"compute.rank_workers={workers}"]
    recipe = load_recipe(config, [*overrides, f"store={store}", f"threads={threads}", *compute])
    layout = RunLayout(recipe.open_store(), run)
    base, generations = layout.model_url(0), layout.stage_url(1, "generate")
    if layout.store.manifest(base) is None:
        prepare_base(recipe, base)
    c = recipe.compute
    # As tasks/stages.py builds the stages' runners for compute.executor: ray.
    engine = RayRunner.for_stage(c, workers, recipe.generate.engine.engine_shape(c.cpus_per_worker, c.gpus_per_worker))
    judges = RayRunner.for_stage(c, workers, recipe.judge.engine_shape(c.cpus_per_worker, c.gpus_per_worker))
    generated = generate(recipe, base, 1, generations, engine)
    ranked = rank(recipe, generations, layout.stage_url(1, "rank"), judges)
    return {"generate": generated.seconds, "rank": ranked.seconds}


def measure_ray(ctx: Context) -> dict:
    s = ctx.sizes
    cores = len(os.sched_getaffinity(0))
    times = {}
    for workers in (1, 2):
        run = f"ray-{workers}"
        store = ctx.work / run / "store"
        store.mkdir(parents=True)
        if s.ray_recipe == DEFAULT_RECIPE:
            seed_base_model(ctx.model, store, run)
        threads = max(1, cores // workers)  # each worker on its share of the cores
        args = [s.ray_recipe, list(s.ray_overrides), str(store), run, workers, threads]
        result, log = ctx.work / f"{run}.json", LOGS / f"{run}.log"
        code = (
            "import json, pathlib; from bench.pipeline import stages_on_ray; "
            f"pathlib.Path({str(result)!r}).write_text(json.dumps(stages_on_ray(*{args!r})))"
        )
        with log.open("w") as out:
            done = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-400:]
            raise RuntimeError(f"stages on Ray with {workers} worker(s) failed (log {log}): {tail}")
        times[workers] = {**json.loads(result.read_text()), "threads": threads}
        shutil.rmtree(store, ignore_errors=True)
    recipe = " ".join([s.ray_recipe, *s.ray_overrides])
    rows = [
        Row(
            "generate_2_workers",
            times[2]["generate"],
            "s",
            "1 worker",
            times[1]["generate"],
            note=f"{recipe}; Ray's start-up is in generate's seconds",
        ),
        Row("rank_2_workers", times[2]["rank"], "s", "1 worker", times[1]["rank"]),
    ]
    return {"rows": rows, "details": {"recipe": s.ray_recipe, "overrides": list(s.ray_overrides), "times": times}}
