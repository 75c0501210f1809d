"""Hard-label SPPO, as TRL defines it (DPOTrainer loss_type="sppo_hard"): the winner wins with probability 1,
the loser with 0, so the targets are +-eta/2; no 1/2 factor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported by the training code; recipes load without it
    import torch

from sppo.losses.base import LossSettings


class SPPOHardLossConfig(LossSettings):
    type: Literal["sppo_hard"] = "sppo_hard"

    def __call__(self, logr_chosen, logr_rejected, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return (logr_chosen - self.eta / 2) ** 2 + (logr_rejected + self.eta / 2) ** 2
