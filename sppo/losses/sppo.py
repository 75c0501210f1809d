"""SPPO (Wu et al. 2024, eq. 3.6): each response regresses its log-ratio onto eta * (its win rate against
pi_t - 1/2), the winner's and the loser's each from their own estimated win rate."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:  # torch is imported by the training code; recipes load without it
    import torch

from sppo.losses.base import LossSettings


class SPPOLossConfig(LossSettings):
    type: Literal["sppo"] = "sppo"
    needs: ClassVar[tuple[str, ...]] = ("chosen_probs_win", "chosen_probs_lose")

    def __call__(self, logr_chosen, logr_rejected, values: dict[str, torch.Tensor]) -> torch.Tensor:
        win, lose = values["chosen_probs_win"], values["chosen_probs_lose"]
        return ((logr_chosen - self.eta * (win - 0.5)) ** 2 + (logr_rejected - self.eta * (lose - 0.5)) ** 2) / 2
