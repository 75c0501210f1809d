"""train: pi_{t+1} from pi_t with the recipe's loss, saved as an HF model folder (with train.adapter: the merged
policy, and the adapter in model/adapter/).

In this process by default; as a launched DeepSpeed job (jobs/train_deepspeed.py) when train.deepspeed is set: its
ranks on this node (train.launcher torchrun or deepspeed), or on the nodes of a Ray cluster (launcher ray), through a
`cluster_launch` the caller hands in (distributed/ray_train.py: this library never imports Ray)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sppo.artifacts import PAIRS, TRAIN_FILE, TRAIN_LOG, read_rows
from sppo.config import RecipeConfig
from sppo.models import check_weights_finite, configure_torch, load_policy, save_trained_policy
from sppo.pair_tokens import tokenize_pairs
from sppo.precision import resolve_precision
from sppo.runner import Progress
from sppo.settings import fingerprint
from sppo.store import Manifest, commit_stage
from sppo.train_distributed import launch
from sppo.training import train_policy

# (recipe, dataset URL, policy URL, folder to write pi_{t+1} and its log into, progress) -> the training log. Its
# ranks may run on other nodes, so they get store URLs, not this node's copies.
ClusterLaunch = Callable[[RecipeConfig, str, str, Path, Progress | None], list[dict]]


def train(
    recipe: RecipeConfig,
    dataset: str,
    policy: str,
    out: str,
    progress: Progress | None = None,
    cluster_launch: ClusterLaunch | None = None,
) -> Manifest:
    """`progress(optimizer steps done, total)` follows training, in this process or in the launched job.
    `cluster_launch` runs the job when train.launcher is 'ray'."""
    cfg = recipe.train
    if cfg.launcher == "ray" and cluster_launch is None:
        raise ValueError(
            "train.launcher 'ray' needs a Ray cluster launcher: run the iteration through its flow (make "
            "run-iteration), whose train task hands one in, or set train.launcher=torchrun"
        )

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        rows = read_rows(inputs["dataset"] / TRAIN_FILE, PAIRS)
        if cfg.launcher == "ray":
            history = cluster_launch(recipe, dataset, policy, tmp, progress)
        elif cfg.deepspeed is not None:
            history = launch(recipe, inputs["dataset"], inputs["reference"], tmp, progress)
        else:
            configure_torch(recipe.threads)
            model, tokenizer = load_policy(inputs["reference"], recipe.model.trust_remote_code, training=True)
            model = cfg.adapter.wrap(model, cfg.seed)
            pairs = tokenize_pairs(rows, tokenizer, cfg.max_length, cfg.max_prompt_length)
            precision = resolve_precision(recipe.precision)
            history = train_policy(model, pairs, cfg, tokenizer.pad_token_id, on_step=progress, precision=precision)
            save_trained_policy(model, tokenizer, tmp, inputs["reference"], None, recipe.model.trust_remote_code)
            (tmp / TRAIN_LOG).write_text("".join(json.dumps(h) + "\n" for h in history))
        check_weights_finite(tmp)  # the loop checks every step; this also covers a launched job's output
        losses = [h["loss"] for h in history]
        return {
            "rows": len(rows),
            "processes": cfg.world_size if cfg.deepspeed is not None else 1,
            "reference": str(policy),
            "loss": cfg.loss.type,
            "adapter": cfg.adapter.type,
            "precision": resolve_precision(recipe.precision).name,
            "steps": len(history),
            "epochs": cfg.epochs,
            "first_loss": losses[0],
            "final_loss": losses[-1],
            "mean_loss": float(np.mean(losses)),
        }

    inputs = {"dataset": dataset, "reference": policy}
    return commit_stage(recipe.open_store(), out, "model", fingerprint_of(recipe), inputs, produce)


def fingerprint_of(recipe: RecipeConfig) -> str:
    # train.nodes is placement, not output, but the ranks in all set the global batch; counted only across
    # nodes, so every one-node stage keeps the fingerprint it had before nodes existed.
    world = [{"world_size": recipe.train.world_size}] if recipe.train.nodes > 1 else []
    return fingerprint(recipe.train, recipe.precision, *world)
