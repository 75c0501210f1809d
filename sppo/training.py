"""SPPO training of pi_{t+1} from pi_t: one loop for one process (fp32) and for every rank of a DeepSpeed job.

pi_ref is pi_t, the policy that generated the data. The policy starts out equal to pi_t, so the
reference log-probs are computed once, from the policy itself without gradients, before the first
update: no frozen copy sits in memory and no step pays for a second forward pass. A policy trained through
an adapter (train.adapter) computes them with its adapter switched off: pi_t's own weights."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sppo.config import TrainConfig
from sppo.generation import chat_prompt_ids
from sppo.optim import linear_schedule, make_optimizer
from sppo.pair_batches import Batcher, TokenizedPair, attention_mask_for, batcher_for
from sppo.precision import Precision
from sppo.runner import Progress

log = logging.getLogger(__name__)


class TrainingDivergedError(ValueError):
    """The loss or the gradients stopped being finite: training stops and nothing is committed."""


# train.parquet columns that are pi_ref's log-probabilities, not per-pair values for the loss.
REFERENCE_COLUMNS = ("chosen_ref_logprob", "rejected_ref_logprob")


def tokenize_pairs(rows: Sequence[dict], tokenizer, max_length: int, max_prompt_length: int) -> list[TokenizedPair]:
    """Chat-formatted prompt + response + end-of-turn, truncated as the reference's trainer (TRL's DPO
    tokenize_row, truncation_mode keep_end) does: only when prompt + the longer response exceed max_length,
    the prompt keeps its last max_prompt_length tokens; if that is still too long, both responses are cut
    to max_length - max_prompt_length."""
    pairs = []
    for index, row in enumerate(rows):
        prompt = chat_prompt_ids(tokenizer, row["prompt"])
        # Pairs from our own generations carry the sampled token ids: train on exactly those (decoding and
        # re-encoding text need not give them back), else tokenize the text.
        sampled = row.get("chosen_token_ids") is not None and row.get("rejected_token_ids") is not None
        chosen, rejected = (
            (list(row[f"{key}_token_ids"]) if sampled else tokenizer(row[key], add_special_tokens=False)["input_ids"])
            + [tokenizer.eos_token_id]
            for key in ("chosen", "rejected")
        )
        longer = max(len(chosen), len(rejected))
        truncated = len(prompt) + longer > max_length
        if truncated:
            prompt = prompt[-max_prompt_length:]
        if len(prompt) + longer > max_length:
            room = max(1, max_length - max_prompt_length)
            chosen, rejected = chosen[:room], rejected[:room]
        pairs.append(
            TokenizedPair(
                prompt_id=str(row.get("prompt_id", f"row {index}")),
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                values={k: float(v) for k, v in row.items() if isinstance(v, float) and k not in REFERENCE_COLUMNS},
                truncated=truncated,
                # The engine's log-probabilities hold for the sequence it saw: the same prompt, uncut.
                reference=_reference(row)
                if sampled and not truncated and len(prompt) == row.get("prompt_token_count")
                else None,
            )
        )
    return pairs


def _reference(row: dict) -> tuple[float, float] | None:
    chosen, rejected = row.get("chosen_ref_logprob"), row.get("rejected_ref_logprob")
    return None if chosen is None or rejected is None else (float(chosen), float(rejected))


def model_device(model) -> torch.device:
    """Where the model computes (a DeepSpeed engine and an HF model both say; else its first parameter)."""
    device = getattr(model, "device", None)
    return torch.device(device) if device is not None else next(model.parameters()).device


def sequence_logprobs(model, batch: dict[str, torch.Tensor], bf16: bool = False) -> torch.Tensor:
    """Sum over each response's tokens of log pi(y_t | x, y_<t), for a batch of either layout
    (sppo.pair_batches): chosen sequences first, then rejected ones.

    The vocabulary projection runs only at the positions that predict a response token: the prompt's
    positions (a third to a half of a sequence here) would compute logits over the whole vocabulary for
    nothing, and the LM head is a fifth of a small model's FLOPs. The log-softmax runs in fp32 even for a
    bf16 model: bf16 keeps ~3 significant digits, and a sum of hundreds of rounded token log-probs would
    blur the sequence log-ratios the losses compare. `bf16`: the model's matmuls in bf16 under autocast (its
    weights stay fp32, the master copy the optimizer updates)."""
    device = model_device(model)
    batch = {k: v.to(device) for k, v in batch.items()}
    dtype = next(model.parameters()).dtype
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": attention_mask_for(model, batch["attention_mask"], dtype),
        **({"position_ids": batch["position_ids"]} if "position_ids" in batch else {}),
    }
    rows, positions = batch["rows"], batch["positions"]
    parts = _decoder_and_head(model)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if parts is None:  # a DeepSpeed engine, or a model whose forward changes its logits after the head
            logits = _forward_logits(model, inputs, rows, positions)
        else:
            decoder, head = parts
            logits = head(decoder(**inputs).last_hidden_state[rows, positions])
    token_logps = -F.cross_entropy(logits.float(), batch["targets"], reduction="none")
    sequences = int(batch["sequences"])
    return torch.zeros(sequences, dtype=token_logps.dtype, device=device).index_add(0, batch["owners"], token_logps)


# Config fields of causal LMs whose forward rescales or caps the logits after the LM head (Gemma 2/3, Cohere,
# Granite): for these the decoder + head shortcut would change the numbers.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _decoder_and_head(model):
    """(decoder, LM head) of a plain HF causal LM, or None for a DeepSpeed engine or a model whose forward
    does more than head(decoder(x)).

    A DeepSpeed engine must run its own forward: ZeRO-3 gathers and releases partitioned parameters from
    hooks that start at the top module's forward, and calling its decoder and head directly trained with
    different gradients than one process does (tests/test_deepspeed_on_cpu.py caught it)."""
    if hasattr(model, "module"):
        return None
    config = getattr(model, "config", None)
    if config is None or any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_POSTPROCESSING):
        return None
    get_decoder, get_head = getattr(model, "get_decoder", None), getattr(model, "get_output_embeddings", None)
    decoder, head = (get_decoder(), get_head()) if get_decoder and get_head else (None, None)
    return (decoder, head) if decoder is not None and head is not None else None


def _forward_logits(model, inputs: dict, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at (rows, positions) from the model's own forward, asking it (`logits_to_keep`, which most HF
    causal LMs take) only for the positions from the first one scored on."""
    inner = getattr(model, "module", model)
    first = int(positions.min()) if len(positions) else 0
    if "logits_to_keep" in inspect.signature(inner.forward).parameters:
        keep = torch.arange(first, inputs["input_ids"].shape[1], device=positions.device)
        return model(**inputs, logits_to_keep=keep).logits[rows, positions - first]
    return model(**inputs).logits[rows, positions]


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


def world() -> tuple[int, int]:
    """(rank, world size) of the data-parallel job; (0, 1) in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_ranks_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over the ranks (NCCL reduces only GPU tensors: the sum travels through the GPU)."""
    if world()[1] == 1:
        return tensor
    if torch.distributed.get_backend() == "nccl":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        torch.distributed.all_reduce(on_gpu)
        return on_gpu.to(tensor.device)
    torch.distributed.all_reduce(tensor)
    return tensor


def has_adapter(model) -> bool:
    """Whether `model` (or the model inside a DeepSpeed engine) is a peft model: one trained through an adapter."""
    from peft import PeftModel

    return isinstance(getattr(model, "module", model), PeftModel)


def adapter_off(model) -> contextlib.AbstractContextManager:
    """A context in which a peft model (or a DeepSpeed engine around one) computes with its base weights alone,
    pi_t's: peft's disable_adapter(). Any other model is left as it is."""
    return getattr(model, "module", model).disable_adapter() if has_adapter(model) else contextlib.nullcontext()


# no_grad, not inference_mode: ZeRO-3's parameter hooks must run (and may allocate) inside this forward.
@torch.no_grad()
def reference_logprobs(
    model,
    pairs: Sequence[TokenizedPair],
    batch_size: int,
    pad_id: int,
    progress: bool = False,
    shared_prompt: bool = True,
    bf16: bool = False,
) -> torch.Tensor:
    """(N, 2) log pi_ref of (chosen, rejected) for every pair: the generating engine's (TokenizedPair.reference)
    where the pair has them, else from the not-yet-updated policy (with its adapter, if any, switched off).

    The pairs to compute go longest first in batches of `batch_size`, so each batch pads to lengths close to
    its own (the order of a forward pass without gradients changes nothing but padding). With several ranks
    each computes every world-th batch and the rows are summed across ranks; a rank short of a batch
    recomputes batch 0 and drops it, since ZeRO-3 needs every rank in every forward. `shared_prompt`: the
    batch layout (sppo.pair_batches), as train.shared_prompt; `bf16`: as training computes (sequence_logprobs)."""
    rank, size = world()
    make_batch = batcher_for(model, pad_id, shared_prompt)
    was_training = model.training
    model.eval()
    out = torch.zeros(len(pairs), 2)
    todo = [i for i, pair in enumerate(pairs) if pair.reference is None]
    order = sorted(todo, key=lambda i: -pair_length(pairs[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    rounds = range(0, len(batches), size)
    with adapter_off(model):
        for first in tqdm(rounds, desc="reference log-probs", unit="batch", disable=not progress):
            mine = first + rank
            idx = batches[mine] if mine < len(batches) else batches[0]
            logps = sequence_logprobs(model, make_batch([pairs[i] for i in idx]), bf16)
            if mine < len(batches):
                out[idx] = torch.stack(logps.chunk(2), dim=1).float().cpu()
    model.train(was_training)
    out = all_ranks_sum(out)
    for i, pair in enumerate(pairs):
        if pair.reference is not None:
            out[i] = torch.tensor(pair.reference)
    return out


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


def pair_length(pair: TokenizedPair) -> int:
    """Tokens of the pair's longer sequence: what a batch of one row per sequence pads to (a shared-prompt row
    holds both responses, and grows with the longer one too)."""
    return len(pair.prompt) + max(len(pair.chosen), len(pair.rejected))


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


class Engine(Protocol):
    """What the training loop needs: a forward callable, backward and one optimizer step."""

    model: torch.nn.Module

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> tuple[float, float]:
        """Clip, update, advance the schedule, clear gradients; returns (lr used, grad norm before clipping)."""
        ...


class PlainEngine:
    """One process, plain torch optimizer, on the GPU when there is one."""

    def __init__(self, model, cfg: TrainConfig, total_steps: int):
        self.model = model.to("cuda") if torch.cuda.is_available() else model
        self.optimizer = make_optimizer(model, cfg)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(total_steps, cfg.warmup_ratio)
        )
        self.max_grad_norm = cfg.max_grad_norm

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> tuple[float, float]:
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if not torch.isfinite(grad_norm):  # never let one bad step write NaN into every weight
            raise TrainingDivergedError(
                f"the gradient norm is {float(grad_norm)} (the loss was finite): the learning rate "
                f"{self.schedule.get_last_lr()[0]:g} is likely too high for this model; nothing was committed"
            )
        lr = self.schedule.get_last_lr()[0]
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr, float(grad_norm)


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
    if cfg.adapter.type != "none" and not has_adapter(model):  # else every weight would train, silently
        raise ValueError(f"train.adapter is {cfg.adapter.type} but the model has none: pass cfg.adapter.wrap(model)")
    if cfg.disable_dropout:
        disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    truncated = sum(p.truncated for p in pairs)
    if truncated and rank == 0:
        log.warning(
            "%d of %d pairs exceed train.max_length=%d and were truncated", truncated, len(pairs), cfg.max_length
        )
    torch.manual_seed(cfg.seed)
    pairs_per_step = cfg.batch_size * cfg.grad_accum * size
    steps_per_epoch = math.ceil(len(pairs) / pairs_per_step)
    total_steps = steps_per_epoch * cfg.epochs
    if deepspeed_config is None:
        engine: Engine = PlainEngine(model, cfg, total_steps)
    else:
        from sppo.deepspeed_engine import DeepSpeedEngine  # deepspeed is imported only on this path

        engine = DeepSpeedEngine(model, cfg, total_steps, deepspeed_config)
    if not cfg.reference_from_generation or bf16:
        # In bf16 the engine's log-probs and training's own differ by more than rounding (README: precision).
        pairs = [replace(p, reference=None) for p in pairs]
    known = sum(p.reference is not None for p in pairs)
    if rank == 0:
        log.info(
            "training in %s; reference log-probs: %d of %d pairs from generation, the rest by a forward pass",
            "bf16 autocast (fp32 master weights)" if bf16 else "fp32",
            known,
            len(pairs),
        )
    ref_batch = cfg.reference_batch_size or 4 * cfg.batch_size
    make_batch = batcher_for(engine.model, pad_id, cfg.shared_prompt)
    if rank == 0 and cfg.shared_prompt and not make_batch.shared_prompt:
        log.info("train.shared_prompt: this model's attention takes no custom mask; one row per sequence instead")
    ref = reference_logprobs(
        engine.model, pairs, ref_batch, pad_id, progress=progress, shared_prompt=make_batch.shared_prompt, bf16=bf16
    )
    engine.model.train()
    order_rng = random.Random(cfg.seed)
    history: list[dict[str, float]] = []
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not progress)
    if on_step is not None:
        on_step(0, total_steps)
    tokens = padded = 0
    for epoch in range(cfg.epochs):
        for step_indices in epoch_steps(pairs, pairs_per_step, order_rng, cfg.group_by_length):
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
                real, computed = make_batch.token_counts(batch)
                tokens, padded = tokens + real, padded + computed
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
            totals = all_ranks_sum(totals)  # every rank sees the same totals, so every rank stops together
            step = len(history) + 1
            if totals[3] > 0 or not torch.isfinite(totals[:3]).all():
                raise TrainingDivergedError(_diverged(step, bad, cfg))
            try:
                lr, grad_norm = engine.step()
            except TrainingDivergedError as err:
                raise TrainingDivergedError(f"train step {step}: {err}") from None
            record = dict(zip(("loss", "logr_chosen", "logr_rejected"), totals[:3].tolist(), strict=True))
            history.append({"step": step, "epoch": epoch, "lr": lr, "grad_norm": grad_norm, **record})
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            if on_step is not None:
                on_step(len(history), total_steps)
    bar.close()
    if rank == 0 and padded:
        log.info("training batches: %.0f%% of their tokens were padding", 100 * (1 - tokens / padded))
    model.eval()
    return history
