"""Launch the train stage as a multi-process DeepSpeed job (jobs/train_deepspeed.py) on this node, under
torchrun or DeepSpeed's launcher, stream its output into the log, and read back its training log. The train
stage calls `launch` when train.deepspeed is set.

The job's exit codes: 0 done; EXIT_MISTAKE (3) when a rank stopped on a mistake in the recipe or the data
(a ValueError: a missing DeepSpeed JSON, a bad field, an unreadable dataset), which it also names on one
line starting with MISTAKE_MARK; anything else is a crash. Launchers may report their own code (torchrun
exits 1 whatever its ranks did), so `launch` reads the mark as well as the code."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from sppo.artifacts import TRAIN_LOG
from sppo.build_locks import clear_stale_build_locks
from sppo.config import RecipeConfig
from sppo.job_output import TracebackJoiner
from sppo.processes import start_group, stop_group
from sppo.runner import Progress

log = logging.getLogger(__name__)

JOB = "jobs.train_deepspeed"  # the module every rank runs
EXIT_MISTAKE = 3
MISTAKE_MARK = "sppo-train-mistake:"  # + the cause, one line, printed by the rank that stopped
PROGRESS_MARK = "sppo-train-progress:"  # + "step/total", printed by rank 0 after each optimizer step
_PROGRESS = re.compile(re.escape(PROGRESS_MARK) + r" (\d+)/(\d+)")


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
    """Run the JOB module as a train.processes-process job on this node under train.launcher; returns the log.

    The job's output (every rank's, and the launcher's) goes line by line to this module's logger, so it
    reaches whatever shows the train stage's log. `progress(step, total)` follows rank 0's steps. A job
    that stopped on a mistake in the recipe or the data raises ValueError naming it; any other failure
    RuntimeError with the job's last lines."""
    cfg = recipe.train
    env = dict(os.environ)
    # DeepSpeed JIT-compiles helper ops on first use; keep them in the project's cache, not ~/.cache.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
    clear_stale_build_locks(env["TORCH_EXTENSIONS_DIR"])  # left by a killed build, it would hang the job
    env["PYTHONUNBUFFERED"] = "1"  # lines as they happen, not when a rank's buffer fills
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
    tracebacks = TracebackJoiner()  # a rank's traceback as one log entry, not one per line
    # Its own process group that dies with this process: a killed flow, a Ctrl-C or a stage timeout leaves no
    # launcher or rank running (PPID 1) with the GPUs.
    job = start_group(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
    )
    try:
        for raw in job.stdout:
            line = raw.rstrip()
            if not line:
                continue
            for entry in tracebacks.feed(line):
                log.info("%s", entry)
            if MISTAKE_MARK in line:
                mistake = line.split(MISTAKE_MARK, 1)[1].strip()
            step = _PROGRESS.search(line)
            if step and progress is not None:
                progress(int(step.group(1)), int(step.group(2)))
            elif not step:
                last.append(line)
        job.wait()
    except BaseException:  # KeyboardInterrupt, a stage timeout, a failing progress callback
        stop_group(job)
        raise
    finally:
        job.stdout.close()
    for entry in tracebacks.flush():
        log.info("%s", entry)
    return job.returncode, mistake, list(last)
