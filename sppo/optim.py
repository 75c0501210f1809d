"""The recipe's optimizer and learning-rate schedule, shared by the plain and the DeepSpeed training engines."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sppo.config import TrainConfig


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor of optimizer step `step` (0-based): exactly transformers'
    get_linear_schedule_with_warmup with ceil(total_steps * warmup_ratio) warm-up steps, as the reference's
    Trainer runs it. The warm-up ramps s / W, so the first step's factor is 0 (the step only feeds the
    optimizer's running averages), then the rate decays linearly to zero."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor
