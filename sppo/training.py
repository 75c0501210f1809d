"""SPPO training of pi_{t+1} from pi_t: one loop for one process and for every rank of a DeepSpeed job.

train_policy reads as its steps: prepare the model, build the engine, take pi_ref's log-probs (from
generation or a forward pass: sppo.logprobs), then per optimizer step accumulate this rank's share of the
gradients in micro-batches and apply the update, stopping before any non-finite step is applied."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from sppo.config import TrainConfig
from sppo.logprobs import has_adapter, reference_logprobs, sequence_logprobs
from sppo.pair_batches import Batcher, TokenizedPair, batcher_for, pair_length
from sppo.precision import Precision
from sppo.ranks import all_ranks_sum, world
from sppo.runner import Progress
from sppo.train_engine import Engine, TrainingDivergedError, build_engine

log = logging.getLogger(__name__)


def disable_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout: nn.Dropout modules and the attention-dropout rates HF attention layers keep as floats."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
        if isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


# Steps per window of length grouping: wide enough that neighbours in length are close, narrow enough that
# each window is a random sample of the epoch.
LENGTH_WINDOW_STEPS = 64


def epoch_steps(
    pairs: Sequence[TokenizedPair], pairs_per_step: int, rng: random.Random, group_by_length: bool
) -> list[list[int]]:
    """One epoch's optimizer steps, as lists of pair indices: every pair once.

    A batch pads its sequences to its longest, and the lengths of generated responses spread widely (a few
    tokens to the cap), so random batches spend much of their compute on padding. Grouping sorts a window of
    the shuffled pairs by length and cuts it into steps; the steps are then shuffled, so training does not
    see short pairs first or last (the order HF's length-grouped sampler leaves)."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[start : start + pairs_per_step] for start in range(0, len(order), pairs_per_step)]
    window = LENGTH_WINDOW_STEPS * pairs_per_step
    steps = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: pair_length(pairs[i]))
        steps += [chunk[s : s + pairs_per_step] for s in range(0, len(chunk), pairs_per_step)]
    rng.shuffle(steps)
    return steps


def pair_loss(
    model, pairs: Sequence[TokenizedPair], ref: torch.Tensor, cfg: TrainConfig, make_batch: Batcher, bf16: bool = False
):
    """Per-pair preference losses of a micro-batch, and the log-ratios (detached) for logging."""
    logps = sequence_logprobs(model, make_batch(pairs), bf16)
    chosen, rejected = logps.chunk(2)
    ref = ref.to(logps.device)
    logr_chosen, logr_rejected = chosen - ref[:, 0], rejected - ref[:, 1]

    values = {
        name: torch.tensor([p.values[name] for p in pairs], dtype=logps.dtype, device=logps.device)
        for name in cfg.loss.needs
    }
    losses = cfg.loss(logr_chosen, logr_rejected, values)
    return losses, logr_chosen.detach(), logr_rejected.detach()


def _describe(pair: TokenizedPair, logr_chosen, logr_rejected, loss) -> str:
    values = ", ".join(f"{k} {v:.4g}" for k, v in pair.values.items())
    return (
        f"{pair.prompt_id} (loss {float(loss)}, logr chosen {float(logr_chosen):.4g}, rejected "
        f"{float(logr_rejected):.4g}, {values})"
    )


def _diverged(step: int, bad: list[str], cfg: TrainConfig) -> str:
    where = f"pair(s) {'; '.join(bad[:3])}" if bad else "a pair on another rank"
    return (
        f"train step {step}: the loss is not finite for {where}. Likely cause: eta = 1/beta = {cfg.loss.eta:g} "
        f"(train.loss.beta={cfg.loss.beta:g}) or train.learning_rate={cfg.learning_rate:g} is too large for this "
        "model, or the dataset holds a broken probability; nothing was committed"
    )


def prepare_model(model, cfg: TrainConfig) -> None:
    """What train.* asks of the model before the engine wraps it: an adapter present if one is configured,
    dropout off, gradient checkpointing on."""
    if cfg.adapter.type != "none" and not has_adapter(model):  # else every weight would train, silently
        raise ValueError(f"train.adapter is {cfg.adapter.type} but the model has none: pass cfg.adapter.wrap(model)")
    if cfg.disable_dropout:
        disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()


def with_reference_sources(pairs: Sequence[TokenizedPair], cfg: TrainConfig, bf16: bool) -> list[TokenizedPair]:
    """The pairs, keeping the generating engine's pi_ref log-probs only where training may use them: with
    train.reference_from_generation, and in fp32. In bf16 the engine's log-probs and training's own differ by
    more than rounding (README: precision), so the reference pass computes them all."""
    if not cfg.reference_from_generation or bf16:
        return [replace(p, reference=None) for p in pairs]
    return list(pairs)


@dataclass
class TokenTally:
    """Tokens the batches held, and tokens they computed (with padding), over the whole run."""

    tokens: int = 0
    padded: int = 0

    def add(self, counts: tuple[int, int]) -> None:
        self.tokens, self.padded = self.tokens + counts[0], self.padded + counts[1]


def accumulate_gradients(
    engine: Engine,
    pairs: Sequence[TokenizedPair],
    step_indices: list[int],
    ref: torch.Tensor,
    cfg: TrainConfig,
    make_batch: Batcher,
    bf16: bool,
    tally: TokenTally,
) -> tuple[torch.Tensor, list[str]]:
    """Forward and backward of this rank's share of one optimizer step, in micro-batches of train.batch_size.

    Returns (loss, logr_chosen, logr_rejected) as means over the global batch, plus the count of non-finite
    losses, summed over ranks so every rank sees the same totals (and every rank stops together); and the
    pairs of this rank whose loss is not finite, described."""
    rank, size = world()
    mine = step_indices[rank::size]
    # Every rank runs the same number of micro-batches (ZeRO-3 gathers parameters collectively).
    micro_batches = math.ceil(math.ceil(len(step_indices) / size) / cfg.batch_size)
    totals = torch.zeros(4, dtype=torch.float64)  # loss, logr_chosen, logr_rejected, non-finite losses
    bad: list[str] = []
    for micro in range(micro_batches):
        idx = mine[micro * cfg.batch_size : (micro + 1) * cfg.batch_size]
        weight = len(idx) / len(step_indices)
        if not idx:  # this rank's share ran out in a short last batch: a zero-weight stand-in
            idx = step_indices[:1]
        batch = [pairs[i] for i in idx]
        tally.add(make_batch.token_counts(batch))
        losses, logr_c, logr_r = pair_loss(engine.model, batch, ref[idx], cfg, make_batch, bf16)
        finite = torch.isfinite(losses.detach())
        bad += [
            _describe(p, lc, lr_, x)
            for p, lc, lr_, x, ok in zip(batch, logr_c, logr_r, losses.detach(), finite, strict=True)
            if not ok
        ]
        loss = losses.mean()
        # Data-parallel gradients are averaged over ranks; x size makes the sum the global-batch mean.
        engine.backward(loss * weight * size)
        stats = [loss.item(), logr_c.mean().item(), logr_r.mean().item(), float((~finite).sum())]
        totals += torch.tensor(stats, dtype=torch.float64) * torch.tensor([weight, weight, weight, 1.0])
    return all_ranks_sum(totals), bad


def apply_update(engine: Engine, totals: torch.Tensor, bad: list[str], step: int, cfg: TrainConfig) -> dict:
    """The optimizer step and its log record, or TrainingDivergedError (nothing applied) when the step's loss
    or its gradient norm is not finite."""
    if totals[3] > 0 or not torch.isfinite(totals[:3]).all():
        raise TrainingDivergedError(_diverged(step, bad, cfg))
    try:
        lr, grad_norm = engine.step()
    except TrainingDivergedError as err:
        raise TrainingDivergedError(f"train step {step}: {err}") from None
    record = dict(zip(("loss", "logr_chosen", "logr_rejected"), totals[:3].tolist(), strict=True))
    return {"lr": lr, "grad_norm": grad_norm, **record}


def train_policy(
    model,
    pairs: Sequence[TokenizedPair],
    cfg: TrainConfig,
    pad_id: int,
    progress: bool = True,
    deepspeed_config: dict | None = None,
    on_step: Progress | None = None,
    precision: Precision | None = None,
) -> list[dict[str, float]]:
    """Train `model` (pi_t on entry, pi_{t+1} on return) in place; returns one log record per optimizer step.

    The same loop runs in one process (plain optimizer) and on every rank of a DeepSpeed job: each global
    batch of batch_size * grad_accum * world pairs is split across ranks, and the logged values are
    means over the whole global batch. `on_step(steps done, total steps)` runs before the first optimizer
    step and after each. `precision` (default fp32): bf16 runs every forward and backward under autocast, the
    reference pass included; weights, optimizer state, log-softmax, log-ratios and loss stay fp32."""
    rank, size = world()
    bf16 = precision is not None and precision.name == "bf16"
    prepare_model(model, cfg)
    truncated = sum(p.truncated for p in pairs)
    if truncated and rank == 0:
        log.warning(
            "%d of %d pairs exceed train.max_length=%d and were truncated", truncated, len(pairs), cfg.max_length
        )
    torch.manual_seed(cfg.seed)
    pairs_per_step = cfg.batch_size * cfg.grad_accum * size
    total_steps = math.ceil(len(pairs) / pairs_per_step) * cfg.epochs
    engine = build_engine(model, cfg, total_steps, deepspeed_config)

    pairs = with_reference_sources(pairs, cfg, bf16)
    if rank == 0:
        log.info(
            "training in %s; reference log-probs: %d of %d pairs from generation, the rest by a forward pass",
            "bf16 autocast (fp32 master weights)" if bf16 else "fp32",
            sum(p.reference is not None for p in pairs),
            len(pairs),
        )
    make_batch = batcher_for(engine.model, pad_id, cfg.shared_prompt)
    if rank == 0 and cfg.shared_prompt and not make_batch.shared_prompt:
        log.info("train.shared_prompt: this model's attention takes no custom mask; one row per sequence instead")
    ref_batch = cfg.reference_batch_size or 4 * cfg.batch_size
    ref = reference_logprobs(
        engine.model, pairs, ref_batch, pad_id, progress=progress, shared_prompt=make_batch.shared_prompt, bf16=bf16
    )

    engine.model.train()
    order_rng = random.Random(cfg.seed)
    history: list[dict[str, float]] = []
    tally = TokenTally()
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not progress)
    if on_step is not None:
        on_step(0, total_steps)
    for epoch in range(cfg.epochs):
        for step_indices in epoch_steps(pairs, pairs_per_step, order_rng, cfg.group_by_length):
            totals, bad = accumulate_gradients(engine, pairs, step_indices, ref, cfg, make_batch, bf16, tally)
            step = len(history) + 1
            history.append({"step": step, "epoch": epoch, **apply_update(engine, totals, bad, step, cfg)})
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]['loss']:.4g}")
            if on_step is not None:
                on_step(len(history), total_steps)
    bar.close()
    if rank == 0 and tally.padded:
        log.info("training batches: %.0f%% of their tokens were padding", 100 * (1 - tally.tokens / tally.padded))
    model.eval()
    return history
