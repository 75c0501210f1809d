"""`python -m sppo.train_distributed`: the train stage as a multi-process DeepSpeed job.

Run under a launcher, one process per GPU (or per CPU share), on one node or many:

    torchrun --nproc_per_node 8 -m sppo.train_distributed --dataset D --policy P --out O --recipe R.yaml
    deepspeed --num_gpus 8 --no_local_rank --module sppo.train_distributed --dataset D ...

Every rank runs sppo.training.train_policy, the single-process loop, inside a ZeRO engine; rank 0 writes
the model folder and train_log.jsonl. The train stage launches this on its node when train.processes > 1
or train.deepspeed is set (see `launch`).

Exit codes: 0 done; EXIT_MISTAKE (3) when a rank stopped on a mistake in the recipe or the data (a
ValueError: a missing DeepSpeed JSON, a bad field, an unreadable dataset), which it also names on one
line starting with MISTAKE_MARK; anything else is a crash. Launchers may report their own code (torchrun
exits 1 whatever its ranks did), so `launch` reads the mark as well as the code."""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from sppo.config import RecipeConfig, load_recipe
from sppo.runner import Progress

log = logging.getLogger(__name__)

EXIT_MISTAKE = 3
MISTAKE_MARK = "sppo-train-mistake:"  # + the cause, one line, printed by the rank that stopped
PROGRESS_MARK = "sppo-train-progress:"  # + "step/total", printed by rank 0 after each optimizer step
_PROGRESS = re.compile(re.escape(PROGRESS_MARK) + r" (\d+)/(\d+)")


def main(argv: list[str] | None = None) -> int:
    try:
        return train(argv)
    except ValueError as err:  # a mistake in the recipe or the data: retrying cannot help
        traceback.print_exc()
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        print(f"{MISTAKE_MARK} {cause}", file=sys.stderr, flush=True)
        return EXIT_MISTAKE


def train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sppo.train_distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="dataset stage folder holding train.parquet")
    parser.add_argument("--policy", required=True, type=Path, help="pi_t model folder (also pi_ref)")
    parser.add_argument("--out", required=True, type=Path, help="folder rank 0 writes pi_{t+1} and the log into")
    parser.add_argument("--recipe", required=True, help="recipe YAML (or JSON)")
    parser.add_argument("overrides", nargs="*", help="section.field=value recipe overrides")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    cfg = recipe.train

    import deepspeed
    import torch
    from transformers.integrations import HfDeepSpeedConfig

    from sppo.deepspeed_engine import deepspeed_config, gathered_state_dict
    from sppo.models import configure_torch, load_policy
    from sppo.schemas import PAIRS, read_rows
    from sppo.stages.dataset import TRAIN_FILE
    from sppo.stages.train import TRAIN_LOG
    from sppo.training import tokenize_pairs, train_policy, world

    deepspeed.init_distributed()  # env:// from the launcher; gloo on DeepSpeed's CPU accelerator
    rank, size = world()
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    configure_torch(max(1, (recipe.threads or os.cpu_count() or 1) // local_size))
    rows = read_rows(args.dataset / TRAIN_FILE, PAIRS)
    ds_config = deepspeed_config(cfg, size)
    # While this object lives, from_pretrained builds the model under zero.Init: each rank holds only its
    # partition of the weights, never a full copy (the point of ZeRO-3 for a 7B policy on 8 ranks).
    zero3_loading = HfDeepSpeedConfig(ds_config) if cfg.deepspeed.stage == 3 else None
    model, tokenizer = load_policy(args.policy, recipe.model.trust_remote_code, training=True)
    pairs = tokenize_pairs(rows, tokenizer, cfg.max_length, cfg.max_prompt_length)

    def report(step: int, total: int) -> None:  # what `launch` turns into progress; also readable by hand
        if rank == 0:
            print(f"{PROGRESS_MARK} {step}/{total}", flush=True)

    # tqdm's bar only on a terminal: piped to the train stage, its carriage returns make one endless line.
    history = train_policy(
        model,
        pairs,
        cfg,
        tokenizer.pad_token_id,
        progress=rank == 0 and sys.stderr.isatty(),
        deepspeed_config=ds_config,
        on_step=report,
    )
    state = gathered_state_dict(model)
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(args.out)
        (args.out / TRAIN_LOG).write_text("".join(json.dumps(h) + "\n" for h in history))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    del zero3_loading
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    recipe: RecipeConfig,
    dataset: Path,
    policy: Path,
    out: Path,
    progress: Progress | None = None,
) -> list[dict]:
    """Run this module as a train.processes-process job on this node under train.launcher; returns the log.

    The job's output (every rank's, and the launcher's) goes line by line to this module's logger, so it
    reaches whatever shows the train stage's log. `progress(step, total)` follows rank 0's steps. A job
    that stopped on a mistake in the recipe or the data raises ValueError naming it; any other failure
    RuntimeError with the job's last lines."""
    from sppo.stages.train import TRAIN_LOG

    cfg = recipe.train
    env = dict(os.environ)
    # DeepSpeed JIT-compiles helper ops on first use; keep them in the project's cache, not ~/.cache.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
    env["PYTHONUNBUFFERED"] = "1"  # lines as they happen, not when a rank's buffer fills
    port = str(_free_port())
    with tempfile.TemporaryDirectory(prefix="sppo-train-") as scratch:
        recipe_file = Path(scratch) / "recipe.json"
        recipe_file.write_text(recipe.model_dump_json())
        job = ["--dataset", str(dataset), "--policy", str(policy), "--out", str(out), "--recipe", str(recipe_file)]
        if cfg.launcher == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.processes}"]
            cmd += ["--master_addr=127.0.0.1", f"--master_port={port}", "-m", "sppo.train_distributed", *job]
        else:
            cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(cfg.processes)]
            cmd += ["--no_local_rank", "--master_port", port, "--module", "sppo.train_distributed", *job]
        log.info("launching the training job: %s", " ".join(cmd))
        code, mistake, last_lines = _stream(cmd, env, progress)
    failure = job_failure(code, mistake, last_lines)
    if failure is not None:
        raise failure
    return [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]


def job_failure(code: int, mistake: str | None, last_lines: list[str]) -> Exception | None:
    """What the train stage raises for a finished job: ValueError for a mistake in the recipe or the data
    (the exit code, or the mark, as torchrun reports its own exit 1), so it is not retried; RuntimeError
    with the last lines for anything else; None when it succeeded."""
    if code == 0:
        return None
    if code == EXIT_MISTAKE or mistake:
        return ValueError(f"training job stopped on a mistake in the recipe or data: {mistake or 'see its log'}")
    tail = "\n".join(last_lines)
    return RuntimeError(f"training job failed (exit {code}); its last lines:\n{tail}")


def _stream(cmd: list[str], env: dict[str, str], progress: Progress | None) -> tuple[int, str | None, list[str]]:
    """Run `cmd`, logging each line of its output; returns (exit code, the mistake it named, its last lines)."""
    mistake, last = None, collections.deque(maxlen=15)
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
    ) as job:
        for raw in job.stdout:
            line = raw.rstrip()
            if not line:
                continue
            log.info("%s", line)
            if MISTAKE_MARK in line:
                mistake = line.split(MISTAKE_MARK, 1)[1].strip()
            step = _PROGRESS.search(line)
            if step and progress is not None:
                progress(int(step.group(1)), int(step.group(2)))
            elif not step:
                last.append(line)
    return job.returncode, mistake, list(last)


if __name__ == "__main__":
    sys.exit(main())
