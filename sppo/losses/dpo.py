"""DPO (Rafailov et al. 2023), the baseline the SPPO paper compares with: -log sigmoid(beta * margin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported by the training code; recipes load without it
    import torch

from sppo.losses.base import LossSettings


class DPOLossConfig(LossSettings):
    type: Literal["dpo"] = "dpo"

    def __call__(self, logr_chosen, logr_rejected, values: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch.nn.functional as F

        return -F.logsigmoid(self.beta * (logr_chosen - logr_rejected))
