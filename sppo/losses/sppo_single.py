"""SPPO from the pairwise probability alone: the loser's target mirrors the winner's, eta * (1/2 - P_wl)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:  # torch is imported by the training code; recipes load without it
    import torch

from sppo.losses.base import LossSettings


class SPPOSingleLossConfig(LossSettings):
    type: Literal["sppo_single"] = "sppo_single"
    needs: ClassVar[tuple[str, ...]] = ("chosen_probs",)

    def __call__(self, logr_chosen, logr_rejected, values: dict[str, torch.Tensor]) -> torch.Tensor:
        p = values["chosen_probs"]
        return ((logr_chosen - self.eta * (p - 0.5)) ** 2 + (logr_rejected + self.eta * (p - 0.5)) ** 2) / 2
