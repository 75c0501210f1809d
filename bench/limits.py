"""Each stage of a finished iteration against the machine's compute limit: its FLOPs, counted from the stage's own
artifacts, at the best native GEMM rate measured in the same run, beside the seconds its manifest records.

- generate: every prompt's prefill once (vLLM shares it between the K samples) and every sampled token
  (2N per token plus attention, bench.roofline.ModelShape);
- train: every trained row (prompt + chosen + rejected, as train.shared_prompt lays it) forward and backward
  (3 forwards) in each epoch, plus a reference forward where the stage computed one (bf16; or pairs without the
  engine's);
- evaluate: the held-out prompts' prefill and answer tokens of each model it answered (iteration 1: the policy
  and the base; later ones read the base's and pi_t's answers from the cache).
Rank (the rule judge: string checks) and the dataset stage compute no matmuls: their seconds count against the
iteration only.

`python -m bench.limits --run NAME [--store artifacts] [--iteration 1] --gflops G` prints the table for a run
that is already there (the gate runs of issue 15 were read this way)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq

from bench.roofline import ModelShape

STAGES = ("generate", "rank", "dataset", "model", "evaluate")


def _manifest(stage: Path) -> dict:
    return json.loads((stage / "manifest.json").read_text())


def generate_flops(shape: ModelShape, stage: Path) -> float:
    rows = pq.read_table(stage / "generations.parquet", columns=["prompt_token_count", "response_tokens"])
    total = 0.0
    for prompt, responses in zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True):
        total += shape.sequence_flops(prompt) + sum(shape.generation_flops(prompt, n + 1) for n in responses)
    return total


def train_flops(shape: ModelShape, stage: Path, dataset: Path) -> float:
    pairs = pq.read_table(
        dataset / "train.parquet", columns=["prompt_token_count", "chosen_token_ids", "rejected_token_ids"]
    ).to_pylist()
    info = _manifest(stage).get("info", {})
    # Each epoch a forward and backward (3 forwards' worth); bf16 computes its own reference pass once. A model
    # trained before the manifest recorded its epochs trained one.
    forwards = 3 * info.get("epochs", 1) + (1 if info.get("precision") == "bf16" else 0)
    rows = [p["prompt_token_count"] + len(p["chosen_token_ids"]) + len(p["rejected_token_ids"]) + 2 for p in pairs]
    return forwards * sum(shape.sequence_flops(n) for n in rows)


def evaluate_flops(shape: ModelShape, stage: Path, prompt_tokens: float, iteration: int) -> float:
    metrics = json.loads((stage / "metrics.json").read_text())
    prompts = metrics["prompts"]
    answered = ["policy", "base"] if iteration == 1 else ["policy"]
    per_model = [metrics[role]["mean_response_tokens"] for role in answered]
    return sum(
        prompts * (shape.sequence_flops(prompt_tokens) + shape.generation_flops(prompt_tokens, n)) for n in per_model
    )


def iteration_limits(iteration_dir: Path, model_dir: Path, gflops: float, iteration: int = 1) -> dict:
    """Per stage: seconds (manifest), FLOPs, the limit in seconds at `gflops`, and seconds / limit."""
    shape = ModelShape.of_folder(model_dir)
    seconds = {name: _manifest(iteration_dir / name)["seconds"] for name in STAGES}
    generations = pq.read_table(iteration_dir / "generate" / "generations.parquet", columns=["prompt_token_count"])
    mean_prompt = sum(generations.column(0).to_pylist()) / max(1, generations.num_rows)
    flops = {
        "generate": generate_flops(shape, iteration_dir / "generate"),
        "model": train_flops(shape, iteration_dir / "model", iteration_dir / "dataset"),
        "evaluate": evaluate_flops(shape, iteration_dir / "evaluate", mean_prompt, iteration),
    }
    out = {}
    for name in STAGES:
        limit = flops.get(name, 0.0) / (gflops * 1e9)
        out[name] = {
            "seconds": seconds[name],
            "tflop": flops.get(name, 0.0) / 1e12,
            "limit_s": limit,
            "x_limit": seconds[name] / limit if limit else None,
        }
    total_limit = sum(v["limit_s"] for v in out.values())
    total = sum(v["seconds"] for v in out.values())
    out["iteration"] = {"seconds": total, "tflop": sum(flops.values()) / 1e12, "limit_s": total_limit,
                        "x_limit": total / total_limit}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="artifacts")
    parser.add_argument("--run", required=True)
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--gflops", type=float, required=True, help="the best native GEMM rate measured (GFLOP/s)")
    args = parser.parse_args()
    root = Path(args.store) / args.run
    limits = iteration_limits(
        root / f"iter-{args.iteration:03d}", root / "iter-000" / "model", args.gflops, args.iteration
    )
    print(f"{'stage':<10} {'seconds':>8} {'TFLOP':>7} {'limit s':>8} {'x limit':>8}")
    for name, v in limits.items():
        x = f"{v['x_limit']:.2f}x" if v["x_limit"] else "-"
        print(f"{name:<10} {v['seconds']:8.1f} {v['tflop']:7.2f} {v['limit_s']:8.1f} {x:>8}")


if __name__ == "__main__":
    main()
