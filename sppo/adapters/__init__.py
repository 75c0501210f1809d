"""Adapters: train a few added weights through peft instead of the whole policy. One module per member, each
with its own config; a recipe picks one by `type` under train.adapter, `none` (full training) by default.

Adding one of LoRA's kin (LoHa, IA3, ...): a module with `XAdapterConfig(AdapterSettings)` (a `type` Literal,
its fields, and `peft_config`, the peft config it stands for) and one entry in AdapterConfig below. The
training loop, the reference pass and what is committed need nothing more (sppo.models.save_trained_policy)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from sppo.adapters.base import AdapterSettings
from sppo.adapters.lora import LoRAAdapterConfig
from sppo.adapters.none import NoAdapterConfig
from sppo.settings import by_type_name

AdapterConfig = Annotated[
    NoAdapterConfig | LoRAAdapterConfig,
    Field(discriminator="type"),
    BeforeValidator(by_type_name("none")),
]

__all__ = ["AdapterConfig", "AdapterSettings", "LoRAAdapterConfig", "NoAdapterConfig"]
