"""The recipe's `precision` (auto | fp32 | bf16) resolved on the machine that computes.

`auto` is bf16 where the hardware multiplies bf16 natively (a CUDA GPU that supports it; a CPU with AMX or
AVX512-BF16), fp32 elsewhere: on a CPU without them bf16 is converted to fp32 for every product and runs
slower than fp32 itself. What bf16 covers is the same everywhere: generation engines, the judge's and
evaluation's models, and training's forward and backward under autocast. Training keeps fp32 master weights
and optimizer state, and the log-softmax, the log-ratios and the loss stay fp32 (sppo.training)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sppo.machine import NATIVE_BF16_FLAGS, native_bf16_flags

PrecisionSetting = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Precision:
    name: Literal["fp32", "bf16"]
    reason: str

    @property
    def torch_dtype(self):
        import torch

        return torch.bfloat16 if self.name == "bf16" else torch.float32

    @property
    def engine_dtype(self) -> str:
        """The name vLLM and transformers take."""
        return "bfloat16" if self.name == "bf16" else "float32"


def _cuda_bf16() -> bool | None:
    """True/False on a CUDA machine (whether its GPU computes bf16), None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return bool(torch.cuda.is_bf16_supported())


def resolve_precision(setting: PrecisionSetting) -> Precision:
    gpu = _cuda_bf16()
    flags = native_bf16_flags()
    where = (
        "the GPU" if gpu is not None else f"this CPU ({', '.join(flags) or 'none of ' + '/'.join(NATIVE_BF16_FLAGS)})"
    )
    native = gpu if gpu is not None else bool(flags)
    if setting == "fp32":
        return Precision("fp32", "precision: fp32 in the recipe")
    if setting == "bf16":
        slow = "" if native else f"; {where} has no native bf16, so it runs slower than fp32"
        return Precision("bf16", f"precision: bf16 in the recipe{slow}")
    if native:
        return Precision("bf16", f"auto: {where} computes bf16 natively")
    return Precision("fp32", f"auto: {where} has no native bf16 (it would run slower than fp32)")
