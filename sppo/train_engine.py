"""The optimizer side of training: what the loop asks of an engine, and the one-process engine (a plain torch
optimizer). DeepSpeed's is sppo.deepspeed_engine, imported only where a job uses it."""

from __future__ import annotations

from typing import Protocol

import torch

from sppo.config import TrainConfig
from sppo.optim import linear_schedule, make_optimizer


class TrainingDivergedError(ValueError):
    """The loss or the gradients stopped being finite: training stops and nothing is committed."""


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


def build_engine(model, cfg: TrainConfig, total_steps: int, deepspeed_config: dict | None) -> Engine:
    """A DeepSpeed engine for a job's rank (`deepspeed_config` given), else the plain one."""
    if deepspeed_config is None:
        return PlainEngine(model, cfg, total_steps)
    from sppo.deepspeed_engine import DeepSpeedEngine  # deepspeed is imported only on this path

    return DeepSpeedEngine(model, cfg, total_steps, deepspeed_config)
