"""LoRA (Hu et al. 2021) through peft: each adapted weight W is trained as W + (alpha / r) * B A, with A, B of
rank r and W frozen. B starts at zero, so the adapted policy starts out equal to pi_t."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sppo.adapters.base import AdapterSettings


class LoRAAdapterConfig(AdapterSettings):
    type: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, description="Rank of the update B A.")
    alpha: float = Field(32.0, gt=0.0, description="The update is scaled by alpha / r.")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout on the adapter's input in training. train.disable_dropout (the default) zeroes it "
        "like every other dropout: the reference log-probs come from the model without dropout.",
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="The layers that get an adapter: module names (e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, "
        "up_proj, down_proj] in Llama) or 'all-linear' (every linear layer but the output head, whatever the "
        "architecture calls them).",
    )

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )
