"""`python -m jobs.train_deepspeed`: the train stage as a multi-process DeepSpeed job, one rank per process.

Run under a launcher, one process per GPU (or per CPU share), on one node or many:

    torchrun --nproc_per_node 8 -m jobs.train_deepspeed --dataset D --policy P --out O --recipe R.yaml
    deepspeed --num_gpus 8 --no_local_rank --module jobs.train_deepspeed --dataset D ...

Every rank runs sppo.training.train_policy, the single-process loop, inside a ZeRO engine; rank 0 writes
the model folder and train_log.jsonl. The train stage launches this on its node when train.deepspeed is set
(sppo.train_distributed.launch, which also documents the exit codes and the lines it reads). Ray Train's workers
(train.launcher ray, distributed/ray_train.py) call `run_rank` in the process group Ray set up: one code path."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from sppo.artifacts import PAIRS, TRAIN_FILE, TRAIN_LOG, read_rows
from sppo.config import RecipeConfig, load_recipe
from sppo.runner import Progress
from sppo.train_distributed import EXIT_MISTAKE, MISTAKE_MARK, PROGRESS_MARK


def main(argv: list[str] | None = None) -> int:
    try:
        return train(argv)
    except ValueError as err:  # a mistake in the recipe or the data: retrying cannot help
        traceback.print_exc()
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        print(f"{MISTAKE_MARK} {cause}", file=sys.stderr, flush=True)
        return EXIT_MISTAKE


def train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train_deepspeed", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="dataset stage folder holding train.parquet")
    parser.add_argument("--policy", required=True, type=Path, help="pi_t model folder (also pi_ref)")
    parser.add_argument("--out", required=True, type=Path, help="folder rank 0 writes pi_{t+1} and the log into")
    parser.add_argument("--recipe", required=True, help="recipe YAML (or JSON)")
    parser.add_argument("overrides", nargs="*", help="section.field=value recipe overrides")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)

    import deepspeed
    import torch

    from sppo.ranks import world

    deepspeed.init_distributed()  # env:// from the launcher; gloo on DeepSpeed's CPU accelerator
    rank = world()[0]

    def report(step: int, total: int) -> None:  # what `launch` turns into progress; also readable by hand
        if rank == 0:
            print(f"{PROGRESS_MARK} {step}/{total}", flush=True)

    run_rank(recipe, args.dataset, args.policy, args.out, report, progress_bar=rank == 0 and sys.stderr.isatty())
    torch.distributed.destroy_process_group()
    return 0


def run_rank(
    recipe: RecipeConfig, dataset: Path, policy: Path, out: Path, report: Progress, progress_bar: bool = False
) -> list[dict]:
    """This rank's share of the job, in an initialized process group: load pi_t (ZeRO-3: partitioned as it
    loads), train, gather; rank 0 writes pi_{t+1} and the training log into `out`. Returns the log."""
    import torch
    from transformers.integrations import HfDeepSpeedConfig

    from sppo.deepspeed_engine import deepspeed_config, gathered_state_dict
    from sppo.models import configure_torch, load_policy, save_trained_policy
    from sppo.pair_tokens import tokenize_pairs
    from sppo.precision import resolve_precision
    from sppo.ranks import world
    from sppo.training import train_policy

    cfg = recipe.train
    rank, size = world()
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    configure_torch(max(1, (recipe.threads or os.cpu_count() or 1) // local_size))
    rows = read_rows(dataset / TRAIN_FILE, PAIRS)
    precision = resolve_precision(recipe.precision)
    ds_config = deepspeed_config(cfg, size, precision)
    # While this object lives, from_pretrained builds the model under zero.Init: each rank holds only its
    # partition of the weights, never a full copy (the point of ZeRO-3 for a 7B policy on 8 ranks).
    zero3_loading = HfDeepSpeedConfig(ds_config) if cfg.deepspeed.stage == 3 else None
    model, tokenizer = load_policy(policy, recipe.model.trust_remote_code, training=True)
    model = cfg.adapter.wrap(model, cfg.seed)  # its new weights are partitioned by deepspeed.initialize
    pairs = tokenize_pairs(rows, tokenizer, cfg.max_length, cfg.max_prompt_length)
    # tqdm's bar only on a terminal: piped to the train stage, its carriage returns make one endless line.
    history = train_policy(
        model,
        pairs,
        cfg,
        tokenizer.pad_token_id,
        progress=progress_bar,
        deepspeed_config=ds_config,
        on_step=report,
        precision=precision,
    )
    # With an adapter only its weights are gathered: the frozen base is pi_t's, read back from `policy`.
    state = gathered_state_dict(model, trainable_only=cfg.adapter.type != "none")
    del zero3_loading  # from here on, from_pretrained (rank 0 merging the adapter) loads a whole model
    if rank == 0:
        save_trained_policy(model, tokenizer, out, policy, state, recipe.model.trust_remote_code)
        (out / TRAIN_LOG).write_text("".join(json.dumps(h) + "\n" for h in history))
    torch.distributed.barrier()
    return history


if __name__ == "__main__":
    sys.exit(main())
