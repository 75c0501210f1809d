"""GPU profile, training: the train stage's own DeepSpeed job (sppo.train_distributed.launch, ZeRO-3, bf16, one
rank per GPU up to `gpus`) on the base policy; seconds per optimizer step after the first, read from the job's
progress lines as the train stage reads them. The job must end with finite losses and every weight matrix moved,
and its first step's log-ratios (policy == reference before any update) show the numerics' noise.

Without CUDA (`--profile gpu --quick`) the same job runs on gloo in fp32 at tiny sizes."""

from __future__ import annotations

import math
import time

from bench.context import Context
from bench.report import Row
from bench.training import bench_pairs

FIGURES = ("seconds_per_step", "logr_step1")


def measure(ctx: Context) -> dict:
    import torch

    from sppo.artifacts import PAIRS, TRAIN_FILE, write_rows
    from sppo.config import DeepSpeedConfig, RecipeConfig, TrainConfig
    from sppo.train_distributed import launch

    s = ctx.sizes
    on_gpu = torch.cuda.is_available()
    precision = "bf16" if on_gpu else "fp32"
    ranks = s.gpus if on_gpu else 1
    pairs_per_step = s.train_batch * s.train_accum * ranks
    dataset, out = ctx.work / "dataset", ctx.work / "trained"
    dataset.mkdir(parents=True)
    write_rows(bench_pairs(s.train_steps * pairs_per_step, s.train_response_words), PAIRS, dataset / TRAIN_FILE)
    # lr 1e-3 AdamW without warm-up: large enough that one step visibly moves bf16 weights.
    train = TrainConfig(
        loss={"type": "sppo", "beta": 0.1},
        learning_rate=1e-3,
        optimizer="adamw",
        warmup_ratio=0.0,
        batch_size=s.train_batch,
        grad_accum=s.train_accum,
        max_length=s.train_max_length,
        max_prompt_length=s.train_max_length // 2,
        processes=ranks,
        deepspeed=DeepSpeedConfig(stage=3),
    )
    recipe = RecipeConfig(threads=None if on_gpu else ctx.threads, precision=precision, train=train)

    step_ends: list[float] = []  # when the job reported each step done (and, first, that it is about to start)

    def progress(done: int, total: int) -> None:
        step_ends.append(time.perf_counter())

    history = launch(recipe, dataset, ctx.model, out, progress=progress)

    losses = [h["loss"] for h in history]
    before, after = _weights(ctx.model), _weights(out)
    common = [k for k in after if k in before and after[k].is_floating_point()]
    # At the saved precision: a bf16 copy of unchanged fp32 weights is not a change.
    moved = {k for k in common if not torch.equal(after[k].float(), before[k].to(after[k].dtype).float())}
    matrices = [k for k in common if after[k].ndim >= 2]
    still = [k for k in matrices if k not in moved]
    if len(history) != s.train_steps or not all(map(math.isfinite, losses)) or not matrices or still:
        raise RuntimeError(
            f"training did not work: {len(history)} of {s.train_steps} steps, losses {losses}, "
            f"{len(still)} of {len(matrices)} weight matrices unchanged ({', '.join(still[:3])})"
        )
    # step_ends[0] is the call before the first step: the first interval holds the warm-up step.
    intervals = [b - a for a, b in zip(step_ends[1:], step_ends[2:], strict=False)]
    seconds_per_step = sum(intervals) / len(intervals) if intervals else float("nan")
    # Before the first update the policy is pi_ref, so step 1's log-ratios measure the numerics alone.
    logr_step1 = max(abs(history[0]["logr_chosen"]), abs(history[0]["logr_rejected"]))
    note = (
        f"ZeRO-3 {precision}, {ranks} rank(s), {len(history)} steps of {pairs_per_step} pairs "
        f"(<= {s.train_max_length} tokens), losses {losses[0]:.4g} -> {losses[-1]:.4g}, all matrices moved"
    )
    rows = [
        Row("seconds_per_step", seconds_per_step, "s", note=note),
        Row("logr_step1", logr_step1, "nats", note="|log pi/pi_ref| at step 1, where the two are the same weights"),
    ]
    details = {"losses": losses, "tensors_moved": len(moved), "tensors": len(common), "history": history}
    return {"rows": rows, "details": details}


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    return weights
