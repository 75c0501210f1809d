"""Preference losses over sequence log-ratios logr = log pi_theta(y|x) - log pi_ref(y|x) (summed over
response tokens). eta = 1/beta. All return per-pair losses; the caller averages."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sppo", "sppo_single", "sppo_hard", "dpo")


def preference_loss(
    loss_type: str,
    logr_chosen: torch.Tensor,
    logr_rejected: torch.Tensor,
    beta: float,
    chosen_probs: torch.Tensor | None = None,
    chosen_probs_win: torch.Tensor | None = None,
    chosen_probs_lose: torch.Tensor | None = None,
) -> torch.Tensor:
    eta = 1.0 / beta
    if loss_type == "sppo":
        # Each response regresses its log-ratio onto eta * (its win rate against pi_t - 1/2).
        return (
            (logr_chosen - eta * (chosen_probs_win - 0.5)) ** 2 + (logr_rejected - eta * (chosen_probs_lose - 0.5)) ** 2
        ) / 2
    if loss_type == "sppo_single":
        # Only the pairwise probability: the loser's target mirrors the winner's.
        return ((logr_chosen - eta * (chosen_probs - 0.5)) ** 2 + (logr_rejected + eta * (chosen_probs - 0.5)) ** 2) / 2
    if loss_type == "sppo_hard":
        # Hard labels (winner P=1, loser P=0), as TRL defines it: no 1/2 factor.
        return (logr_chosen - eta / 2) ** 2 + (logr_rejected + eta / 2) ** 2
    if loss_type == "dpo":
        return -F.logsigmoid(beta * (logr_chosen - logr_rejected))
    raise ValueError(f"unknown loss type {loss_type!r}; choose one of {LOSS_TYPES}")
