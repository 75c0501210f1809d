"""DeepSpeed behind the training loop's Engine interface: the JSON config with its "auto" fields filled from
the recipe, the ZeRO engine, and the full state dict gathered back from ZeRO-3 partitions for saving."""

from __future__ import annotations

import json
from typing import Any

import deepspeed
import torch

from sppo.config import TrainConfig
from sppo.optim import linear_schedule, make_optimizer
from sppo.precision import Precision


def deepspeed_config(cfg: TrainConfig, world_size: int, precision: Precision) -> dict[str, Any]:
    """Read train.deepspeed.config and fill it: "auto" fields from the train section, ZeRO stage and offload
    from train.deepspeed, bf16 from the recipe's precision (the recipe wins over the file for those).

    DeepSpeed's own bf16 mode (bf16 weights, fp32 master weights in its optimizer) on GPUs, where it halves the
    weights' memory; on a CPU the weights stay fp32 and the loop computes under bf16 autocast."""
    ds = cfg.deepspeed
    if ds is None:
        raise ValueError("train.deepspeed is not set; add `deepspeed: {stage: 3}` under `train:` in the recipe")
    path = ds.json_path()
    config = json.loads(path.read_text())
    config.update(
        train_micro_batch_size_per_gpu=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        train_batch_size=cfg.batch_size * cfg.grad_accum * world_size,
        gradient_clipping=cfg.max_grad_norm,
        # The loop owns accumulation (a short last batch has fewer micro-batches): backward() only
        # accumulates and every step() is a boundary.
        managed_gradient_accumulation=False,
        # Our optimizer is torch's RMSprop/AdamW, also when offloaded.
        zero_force_ds_cpu_optimizer=False,
    )
    config.setdefault("bf16", {})["enabled"] = precision.name == "bf16" and torch.cuda.is_available()
    zero = config.setdefault("zero_optimization", {})
    zero["stage"] = ds.stage
    zero.setdefault("offload_optimizer", {})["device"] = "cpu" if ds.offload_optimizer else "none"
    zero.setdefault("offload_param", {})["device"] = "cpu" if ds.offload_params and ds.stage == 3 else "none"
    left = [key for key, value in _leaves(config) if value == "auto"]
    if left:
        raise ValueError(f'{path}: no recipe value fills the "auto" field(s) {", ".join(left)}; set them in the file')
    return config


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


class DeepSpeedEngine:
    """The recipe's torch optimizer and linear schedule inside a DeepSpeed ZeRO engine."""

    def __init__(self, model, cfg: TrainConfig, total_steps: int, config: dict[str, Any]):
        optimizer = make_optimizer(model, cfg)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, cfg.warmup_ratio))
        self.model, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=config)

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss, scale_wrt_gas=False)  # the loop already weights each micro-batch

    def step(self) -> tuple[float, float]:
        lr = self.model.get_lr()[0]
        self.model.step()
        return lr, float(self.model.get_global_grad_norm() or 0.0)


def gathered_state_dict(model: torch.nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor] | None:
    """The full state dict on rank 0 (None elsewhere); under ZeRO-3 gathered one module at a time.
    `trainable_only`: only the parameters that train (an adapter's), no buffers.

    Every rank must call it. Tied parameters stay one tensor so save_pretrained can drop the duplicate."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}
    for prefix, module in model.named_modules():
        named = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad or not trainable_only]
        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            if rank == 0:
                for name, param in named:
                    key = f"{prefix}.{name}" if prefix else name
                    state[key] = seen.setdefault(id(param), param.detach().cpu().clone())
                for name, buf in module.named_buffers(recurse=False) if not trainable_only else ():
                    if name not in module._non_persistent_buffers_set:
                        state[f"{prefix}.{name}" if prefix else name] = buf.detach().cpu().clone()
    return state if rank == 0 else None
