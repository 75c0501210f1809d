"""What every preference loss provides. A loss is a function of the pairs' sequence log-ratios
logr = log pi_theta(y|x) - log pi_ref(y|x) (summed over response tokens) and of per-pair values from the
training parquet (the columns it names in `needs`); it returns one loss per pair, the caller averages."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # torch is imported by the training code; recipes load without it
    import torch
from pydantic import Field

from sppo.settings import Settings


class LossSettings(Settings):
    """Base of the members' configs; `type` (a Literal in each member) picks the member in a recipe."""

    # Bounds that catch nonsense, not taste: below 1e-5, eta = 1/beta puts SPPO's targets beyond +-5e4 nats,
    # which no sequence log-ratio reaches before the weights overflow.
    beta: float = Field(1e-3, ge=1e-5, le=100.0, description="KL strength in [1e-5, 100]; eta = 1/beta.")
    needs: ClassVar[tuple[str, ...]] = ()  # train.parquet columns (per-pair floats) the loss reads

    @property
    def eta(self) -> float:
        return 1.0 / self.beta

    def __call__(
        self, logr_chosen: torch.Tensor, logr_rejected: torch.Tensor, values: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-pair losses; values[name] is the column `name` of the batch's pairs, for each name in `needs`."""
        raise NotImplementedError
