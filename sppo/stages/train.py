"""train: pi_{t+1} from pi_t with the recipe's loss, saved as an HF model folder (with train.adapter: the merged
policy, and the adapter in model/adapter/).

In this process by default; as a launched DeepSpeed job (jobs/train_deepspeed.py) when train.deepspeed is set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sppo.artifacts import PAIRS, TRAIN_FILE, TRAIN_LOG, read_rows
from sppo.config import RecipeConfig
from sppo.models import check_weights_finite, configure_torch, load_policy, save_trained_policy
from sppo.precision import resolve_precision
from sppo.runner import Progress
from sppo.settings import fingerprint
from sppo.store import Manifest, commit_stage
from sppo.train_distributed import launch
from sppo.training import tokenize_pairs, train_policy


def train(recipe: RecipeConfig, dataset: str, policy: str, out: str, progress: Progress | None = None) -> Manifest:
    """`progress(optimizer steps done, total)` follows training, in this process or in the launched job."""
    cfg = recipe.train

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        rows = read_rows(inputs["dataset"] / TRAIN_FILE, PAIRS)
        if cfg.deepspeed is not None:
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
            "processes": cfg.processes if cfg.deepspeed is not None else 1,
            "reference": str(policy),
            "loss": cfg.loss.type,
            "adapter": cfg.adapter.type,
            "precision": resolve_precision(recipe.precision).name,
            "steps": len(history),
            "first_loss": losses[0],
            "final_loss": losses[-1],
            "mean_loss": float(np.mean(losses)),
        }

    inputs = {"dataset": dataset, "reference": policy}
    return commit_stage(recipe.open_store(), out, "model", fingerprint_of(recipe), inputs, produce)


def fingerprint_of(recipe: RecipeConfig) -> str:
    return fingerprint(recipe.train, recipe.precision)
