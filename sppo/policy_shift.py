"""How far one iteration moved the policy (`python -m sppo diagnose RUN ITER`), in fp32:

- on its training pairs, the sequence log-ratio log pi_{t+1}/pi_t reached for chosen and rejected, beside
  the SPPO target eta * (P - 1/2) the square loss pulls it towards;
- on the held-out prompts, the mean log-ratio of pi_{t+1}'s own answers (an estimate of KL(pi_{t+1} || pi_t)
  at the evaluation's sampling temperature) and of pi_t's answers (minus an estimate of KL(pi_t || pi_{t+1}))."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sppo.logprobs import reference_logprobs
from sppo.models import load_policy
from sppo.pair_batches import TokenizedPair
from sppo.pair_tokens import tokenize_pairs

BATCH = 8


@dataclass
class ShiftReport:
    pairs: int
    logr_chosen: float  # mean log pi_{t+1}/pi_t of the chosen responses
    target_chosen: float  # mean eta * (P_w - 1/2)
    logr_rejected: float
    target_rejected: float
    reached: float  # mean over both responses of logr * sign(target) / mean |target|: 1 = the targets' size
    corr: float  # correlation of logr with its target, over both responses of every pair
    kl_own: float | None  # mean log pi_{t+1}/pi_t over pi_{t+1}'s held-out answers
    kl_reference: float | None  # mean log pi_t/pi_{t+1} over pi_t's held-out answers


def _logprobs(model_dir: Path, pairs: list[TokenizedPair], pad_id: int) -> np.ndarray:
    model, _ = load_policy(model_dir)
    with torch.no_grad():
        return reference_logprobs(model, pairs, BATCH, pad_id).numpy()


def policy_shift(
    before: Path,
    after: Path,
    train_rows: list[dict],
    eta: float,
    max_length: int,
    max_prompt_length: int,
    held_out: list[dict] | None = None,
) -> ShiftReport:
    """`train_rows`: train.parquet's rows; `held_out`: rows with prompt, chosen (pi_{t+1}'s answer) and
    rejected (pi_t's answer) for the held-out prompts, or None."""
    _, tokenizer = load_policy(before)
    pad = tokenizer.pad_token_id

    def tokenized(rows: list[dict]) -> list[TokenizedPair]:
        pairs = tokenize_pairs(rows, tokenizer, max_length, max_prompt_length)
        return [dataclasses.replace(p, reference=None) for p in pairs]  # both models computed here, alike

    pairs = tokenized(train_rows)
    logr = _logprobs(after, pairs, pad) - _logprobs(before, pairs, pad)
    targets = eta * (np.array([[r["chosen_probs_win"], r["chosen_probs_lose"]] for r in train_rows]) - 0.5)
    kl_own = kl_reference = None
    if held_out:
        answers = tokenized(held_out)
        held = _logprobs(after, answers, pad) - _logprobs(before, answers, pad)
        kl_own, kl_reference = float(held[:, 0].mean()), float(-held[:, 1].mean())
    flat_r, flat_t = logr.ravel(), targets.ravel()
    return ShiftReport(
        pairs=len(pairs),
        logr_chosen=float(logr[:, 0].mean()),
        target_chosen=float(targets[:, 0].mean()),
        logr_rejected=float(logr[:, 1].mean()),
        target_rejected=float(targets[:, 1].mean()),
        reached=float(np.mean(flat_r * np.sign(flat_t)) / np.mean(np.abs(flat_t))),
        corr=float(np.corrcoef(flat_r, flat_t)[0, 1]) if len(flat_r) > 2 else float("nan"),
        kl_own=kl_own,
        kl_reference=kl_reference,
    )
