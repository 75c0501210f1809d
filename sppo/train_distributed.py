"""Launch the train stage as a multi-process DeepSpeed job (jobs/train_deepspeed.py) on this node, under
torchrun or DeepSpeed's launcher, and read back its log. The train stage calls `launch` when
train.deepspeed is set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from sppo.artifacts import TRAIN_LOG
from sppo.config import RecipeConfig

JOB = "jobs.train_deepspeed"  # the module every rank runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(recipe: RecipeConfig, dataset: Path, policy: Path, out: Path) -> list[dict]:
    """Run this module as a train.processes-process job on this node under train.launcher; returns the log."""
    cfg = recipe.train
    env = dict(os.environ)
    # DeepSpeed JIT-compiles helper ops on first use; keep them in the project's cache, not ~/.cache.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
    port = str(_free_port())
    with tempfile.TemporaryDirectory(prefix="sppo-train-") as scratch:
        recipe_file = Path(scratch) / "recipe.json"
        recipe_file.write_text(recipe.model_dump_json())
        job = ["--dataset", str(dataset), "--policy", str(policy), "--out", str(out), "--recipe", str(recipe_file)]
        if cfg.launcher == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.processes}"]
            cmd += ["--master_addr=127.0.0.1", f"--master_port={port}", "-m", JOB, *job]
        else:
            cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(cfg.processes)]
            cmd += ["--no_local_rank", "--master_port", port, "--module", JOB, *job]
        done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"training job failed (exit {done.returncode}); its output is above. Command: {cmd}")
    return [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]
