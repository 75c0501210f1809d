"""Helpers for the Ray tests: run generate + rank with given runners, and a real multi-node Ray cluster
started on loopback with the `ray` CLI, stopped by killing only the processes it started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil

from sppo.artifacts import GENERATIONS, PREFERENCES, PREFERENCES_FILE, read_rows
from sppo.config import load_recipe
from sppo.runner import Runner, run_in_process
from sppo.stages.base import prepare_base
from sppo.stages.generate import GENERATIONS_FILE, generate
from sppo.stages.rank import rank
from sppo.store import ArtifactStore, RunLayout

from .conftest import REPO

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # authentication: distributed.ray_pool.token_env()


def stage_recipe(store: Path, model_dir: Path, executor: str = "local", extra: list[str] = ()):
    """The smoke recipe on the tiny model: 8 prompts in 4 generation batches and 4 judge chunks, 1 thread
    (so the same batch computes the same sums in every process)."""
    overrides = [
        f"store={store}",
        f"model.base={model_dir}",
        f"data.prompts={REPO / 'data' / 'prompts.jsonl'}",
        "threads=1",
        "generate.batch_size=8",
        "judge.batch_size=2",
        f"compute.executor={executor}",
        *extra,
    ]
    return load_recipe(REPO / "configs" / "smoke.yaml", overrides)


def generate_and_rank(recipe, run: str, generate_runner: Runner = run_in_process, rank_runner: Runner = run_in_process):
    layout = RunLayout(ArtifactStore(recipe.store), run)
    prepare_base(recipe, layout.model_url(0))
    generate(recipe, layout.model_url(0), 1, layout.stage_url(1, "generate"), generate_runner)
    rank(recipe, layout.stage_url(1, "generate"), layout.stage_url(1, "rank"), rank_runner)
    generations = read_rows(Path(layout.stage_url(1, "generate")) / GENERATIONS_FILE, GENERATIONS)
    preferences = read_rows(Path(layout.stage_url(1, "rank")) / PREFERENCES_FILE, PREFERENCES)
    return generations, preferences


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """A Ray head and `workers` more nodes on 127.0.0.1, `cpus` logical CPUs each, with token authentication. Every
    process it starts inherits a marker variable; stop() kills exactly those (never `ray stop`, which would
    end other Rays on the box)."""

    def __init__(self, workers: int = 1, cpus: int = 1):
        from distributed.ray_pool import token_env  # imports Ray

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.marker = uuid.uuid4().hex
        self.temp_dir = tempfile.mkdtemp(prefix="sppo-ray-", dir="/tmp")  # short: Ray puts sockets in it
        # With the project's token: the driver's connect() presents the same one. (Unlike the embedded local
        # Ray, the nodes keep Ray's rewrite of 127.0.0.1 to the machine's address:
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps a node on loopback, also forbids a second node.)
        self.env = {
            **os.environ,
            **RAY_ENV,
            **token_env(),
            "RAY_AUTH_MODE": "token",
            "SPPO_RAY_TEST_CLUSTER": self.marker,
        }
        ray_cli = str(Path(sys.executable).parent / "ray")
        common = [f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        try:
            self._start(
                [ray_cli, "start", "--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}"]
                + ["--include-dashboard=false"]
                + common
            )
            for _ in range(workers):
                self._start([ray_cli, "start", f"--address={self.address}"] + common)
        except BaseException:
            self.stop()
            raise

    def _start(self, cmd: list[str]) -> None:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")

    def processes(self) -> list[psutil.Process]:
        mine = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("SPPO_RAY_TEST_CLUSTER") == self.marker:
                    mine.append(proc)
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return mine

    def stop(self) -> None:
        procs = self.processes()
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
