"""SPPO training of pi_{t+1} from pi_t on one process (fp32; DeepSpeed reuses these pieces).

pi_ref is pi_t, the policy that generated the data. The policy starts out equal to pi_t, so the
reference log-probs are computed once, from the policy itself in inference mode, before the first
update: no frozen copy sits in memory and no step pays for a second forward pass."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sppo.config import TrainConfig
from sppo.losses import preference_loss


@dataclass(frozen=True)
class TokenizedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    chosen_probs: float
    chosen_probs_win: float
    chosen_probs_lose: float


def tokenize_pairs(rows: Sequence[dict], tokenizer, max_length: int, max_prompt_length: int) -> list[TokenizedPair]:
    """Chat-formatted prompt (left-truncated) + response + end-of-turn, the response cut to fit max_length."""
    pairs = []
    for row in rows:
        prompt = list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": row["prompt"]}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        )[-max_prompt_length:]
        room = max(1, max_length - len(prompt))

        def response(text: str, room: int = room) -> list[int]:
            return (tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])[:room]

        pairs.append(
            TokenizedPair(
                prompt=prompt,
                chosen=response(row["chosen"]),
                rejected=response(row["rejected"]),
                chosen_probs=row["chosen_probs"],
                chosen_probs_win=row["chosen_probs_win"],
                chosen_probs_lose=row["chosen_probs_lose"],
            )
        )
    return pairs


def collate(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences then rejected ones in one right-padded batch (right padding keeps positions exact)."""
    seqs = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    width = max(len(a) + len(b) for a, b in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    response = torch.zeros((len(seqs), width), dtype=torch.bool)
    for row, (prompt, resp) in enumerate(seqs):
        n = len(prompt) + len(resp)
        ids[row, :n] = torch.tensor(prompt + resp)
        attention[row, :n] = 1
        response[row, len(prompt) : n] = True
    return {"input_ids": ids, "attention_mask": attention, "response_mask": response}


def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over response tokens of log pi(y_t | x, y_<t); prompt and padding tokens are masked out."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["input_ids"][:, 1:]
    token_logps = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (token_logps * batch["response_mask"][:, 1:]).sum(dim=1)


@torch.inference_mode()
def reference_logprobs(
    model, pairs: Sequence[TokenizedPair], batch_size: int, pad_id: int, progress: bool = False
) -> torch.Tensor:
    """(N, 2) log pi_ref of (chosen, rejected) for every pair, from the not-yet-updated policy."""
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="reference log-probs", unit="batch", disable=not progress):
        chunk = pairs[start : start + batch_size]
        logps = sequence_logprobs(model, collate(chunk, pad_id))
        out.append(torch.stack(logps.chunk(2), dim=1))
    model.train(was_training)
    return torch.cat(out).float()


def pair_loss(model, pairs: Sequence[TokenizedPair], ref: torch.Tensor, cfg: TrainConfig, pad_id: int):
    """Mean preference loss of a micro-batch, plus the log-ratios for logging."""
    logps = sequence_logprobs(model, collate(pairs, pad_id))
    chosen, rejected = logps.chunk(2)
    logr_chosen, logr_rejected = chosen - ref[:, 0], rejected - ref[:, 1]

    def column(name: str) -> torch.Tensor:
        return torch.tensor([getattr(p, name) for p in pairs], dtype=logps.dtype)

    losses = preference_loss(
        cfg.loss,
        logr_chosen,
        logr_rejected,
        cfg.beta,
        chosen_probs=column("chosen_probs"),
        chosen_probs_win=column("chosen_probs_win"),
        chosen_probs_lose=column("chosen_probs_lose"),
    )
    return losses.mean(), logr_chosen.detach(), logr_rejected.detach()


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Linear warm-up then linear decay to zero, as the reference's transformers Trainer does."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def train_policy(
    model, pairs: Sequence[TokenizedPair], cfg: TrainConfig, pad_id: int, progress: bool = True
) -> list[dict[str, float]]:
    """Train `model` (pi_t on entry, pi_{t+1} on return) in place; returns one log record per optimizer step."""
    torch.manual_seed(cfg.seed)
    ref = reference_logprobs(model, pairs, cfg.batch_size, pad_id, progress=progress)
    model.train()
    optimizer = make_optimizer(model, cfg)
    pairs_per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = math.ceil(len(pairs) / pairs_per_step)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(steps_per_epoch * cfg.epochs, cfg.warmup_ratio)
    )
    order_rng = random.Random(cfg.seed)
    history: list[dict[str, float]] = []
    bar = tqdm(total=steps_per_epoch * cfg.epochs, desc="train", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        order = list(range(len(pairs)))
        order_rng.shuffle(order)
        for step_start in range(0, len(order), pairs_per_step):
            step_indices = order[step_start : step_start + pairs_per_step]
            optimizer.zero_grad(set_to_none=True)
            totals = {"loss": 0.0, "logr_chosen": 0.0, "logr_rejected": 0.0}
            for micro_start in range(0, len(step_indices), cfg.batch_size):
                idx = step_indices[micro_start : micro_start + cfg.batch_size]
                loss, logr_c, logr_r = pair_loss(model, [pairs[i] for i in idx], ref[idx], cfg, pad_id)
                weight = len(idx) / len(step_indices)
                (loss * weight).backward()
                totals["loss"] += loss.item() * weight
                totals["logr_chosen"] += logr_c.mean().item() * weight
                totals["logr_rejected"] += logr_r.mean().item() * weight
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = schedule.get_last_lr()[0]
            optimizer.step()
            schedule.step()
            history.append(
                {"step": len(history) + 1, "epoch": epoch, "lr": lr, "grad_norm": float(grad_norm), **totals}
            )
            bar.update(1)
            bar.set_postfix(loss=f"{totals['loss']:.4g}")
    bar.close()
    model.eval()
    return history
