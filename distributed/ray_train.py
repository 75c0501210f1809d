"""The train stage's DeepSpeed job across the nodes of a Ray cluster (train.launcher ray).

Ray Train's TorchTrainer starts train.nodes x train.processes workers, one per GPU (or per CPU on a CPU cluster),
and sets up their process group (NCCL on GPUs, gloo on CPUs); each runs jobs.train_deepspeed.run_rank, the code
every rank of the torchrun job runs. No second training loop.

What passes between nodes goes through the store, never a node's disk: every rank reads the dataset and pi_t from
the store (a verified local copy on its node), and rank 0's pi_{t+1} is a Ray Train checkpoint persisted under the
store (<store>/.ray-train/<name>), which this process copies into the stage's folder, then deletes.

Each rank's steps and any rank's failure come back on a queue to this process, which logs them where the train
task's log shows them: one line per rank and step, and a failure as one entry with that rank's traceback. A
mistake in the recipe or the data (ValueError on a rank) is raised as ValueError, so it is not retried."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import traceback
import uuid
from pathlib import Path

import ray
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.util.queue import Empty, Queue

from distributed.ray_pool import connect
from sppo.artifacts import TRAIN_LOG
from sppo.config import RecipeConfig
from sppo.runner import Progress

# Under "sppo": PREFECT_LOGGING_EXTRA_LOGGERS sends it to the train task's log in the Prefect UI.
log = logging.getLogger("sppo.ray_train")
POLL_S = 0.5  # how often this process looks for the ranks' news while the trainer runs
CHECKPOINTS = ".ray-train"  # under the store's root; each job's folder is removed once copied


def launch_on_cluster(
    recipe: RecipeConfig, dataset: str, policy: str, out: Path, progress: Progress | None = None
) -> list[dict]:
    """Train pi_{t+1} on the cluster at compute.ray_address (None: a local Ray) from the store's `dataset` and
    `policy` stages; writes it and the training log into `out` and returns the log."""
    cfg = recipe.train
    connect(recipe.compute.ray_address)
    on_gpus = ray.cluster_resources().get("GPU", 0) > 0
    store = recipe.open_store()
    name = f"train-{uuid.uuid4().hex[:12]}"
    storage = store.join(CHECKPOINTS)
    events = Queue(actor_options={"num_cpus": 0})  # takes none of the CPUs the ranks are placed on
    trainer = TorchTrainer(
        _rank,
        train_loop_config={
            "recipe": recipe.model_dump_json(),
            "dataset": dataset,
            "policy": policy,
            "events": events,
            "torch_extensions": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache/torch_extensions")),
        },
        torch_config=TorchConfig(backend="nccl" if on_gpus else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.world_size, use_gpu=on_gpus, resources_per_worker=None if on_gpus else {"CPU": 1}
        ),
        run_config=RunConfig(name=name, storage_path=store.path_of(storage) if store.is_local else storage),
    )
    log.info(
        "training on the Ray cluster: %d ranks (%d nodes x %d) on %s, checkpoints under %s",
        cfg.world_size,
        cfg.nodes,
        cfg.processes,
        "GPUs (nccl)" if on_gpus else "CPUs (gloo)",
        storage,
    )
    try:
        result = _fit_reporting(trainer, events, progress)
        if result.checkpoint is None:
            raise RuntimeError("the Ray Train job ended without rank 0's checkpoint (the trained model)")
        result.checkpoint.to_directory(str(out))
    finally:
        if store.exists(f"{storage}/{name}"):
            store.fs.rm(store.path_of(f"{storage}/{name}"), recursive=True)
    return [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]


def _fit_reporting(trainer: TorchTrainer, events: Queue, progress: Progress | None):
    """trainer.fit() in a thread while this one logs the ranks' news (the Prefect run's logger lives in this
    thread); the result, or the failure named as the train stage names a torchrun job's."""
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # noqa: BLE001 - read below, in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    failures: list[tuple] = []
    while True:
        running = thread.is_alive()
        try:
            event = events.get(timeout=POLL_S) if running else events.get_nowait()
        except Empty:
            if not running:
                break
            continue
        if event[0] == "step":
            _, rank, node, done, total = event
            log.info("rank %d (node %s): %d/%d optimizer steps", rank, node, done, total)
            if rank == 0 and progress is not None:
                progress(done, total)
        else:
            _, rank, node, mistake, text = event
            log.error("rank %d (node %s) failed:\n%s", rank, node, text.rstrip())
            failures.append((rank, node, mistake, text))
    thread.join()
    if "error" not in outcome:
        return outcome["result"]
    if not failures:
        raise RuntimeError(f"the Ray Train job failed: {outcome['error']}") from outcome["error"]
    rank, node, mistake, text = next((f for f in failures if f[2]), failures[0])
    cause = text.strip().splitlines()[-1]
    if mistake:  # the recipe or the data: every rank would fail the same way on a retry
        raise ValueError(f"training job stopped on a mistake (rank {rank}, node {node}): {cause}")
    raise RuntimeError(f"training job failed on rank {rank} (node {node}): {cause}")


def _rank(config: dict) -> None:
    """One Ray Train worker: its rank of jobs.train_deepspeed in the process group Ray Train set up."""
    import ray.train
    import ray.train.torch

    events: Queue = config["events"]
    context = ray.train.get_context()
    rank, node = context.get_world_rank(), ray.get_runtime_context().get_node_id()[:8]
    try:
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", config["torch_extensions"])
        import deepspeed
        import torch

        from jobs.train_deepspeed import run_rank

        deepspeed.init_distributed()  # DeepSpeed's view of the process group Ray Train set up (else: world of 1)

        if torch.cuda.is_available():  # the GPU Ray gave this rank, as torchrun's LOCAL_RANK would pick it
            torch.cuda.set_device(ray.train.torch.get_device())

        recipe = RecipeConfig.model_validate_json(config["recipe"])
        store = recipe.open_store()
        dataset, policy = store.local_copy(config["dataset"]), store.local_copy(config["policy"])

        def report(done: int, total: int) -> None:
            events.put(("step", rank, node, done, total))

        with tempfile.TemporaryDirectory(prefix="sppo-train-rank-") as out:
            history = run_rank(recipe, dataset, policy, Path(out), report)
            checkpoint = Checkpoint.from_directory(out) if rank == 0 else None
            ray.train.report({"steps": len(history)}, checkpoint=checkpoint)
    except BaseException as err:
        events.put(("failed", rank, node, isinstance(err, ValueError), traceback.format_exc()))
        raise
