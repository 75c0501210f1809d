"""Where this process stands in a data-parallel job, and sums over its ranks: plain torch.distributed, so one
process (no process group) is a world of one."""

from __future__ import annotations

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of the data-parallel job; (0, 1) in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_ranks_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over the ranks (NCCL reduces only GPU tensors: the sum travels through the GPU)."""
    if world()[1] == 1:
        return tensor
    if torch.distributed.get_backend() == "nccl":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        torch.distributed.all_reduce(on_gpu)
        return on_gpu.to(tensor.device)
    torch.distributed.all_reduce(tensor)
    return tensor
