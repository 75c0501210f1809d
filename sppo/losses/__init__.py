"""Preference losses, one module per member, each with its own config; a recipe picks one by `type`.

Adding a loss: a module with `XLossConfig(LossSettings)` (a `type` Literal, its fields, `needs` for the
per-pair columns it reads, and `__call__`) and one entry in LossConfig below."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from sppo.losses.base import LossSettings
from sppo.losses.dpo import DPOLossConfig
from sppo.losses.sppo import SPPOLossConfig
from sppo.losses.sppo_hard import SPPOHardLossConfig
from sppo.losses.sppo_single import SPPOSingleLossConfig
from sppo.settings import by_type_name

LossConfig = Annotated[
    SPPOLossConfig | SPPOSingleLossConfig | SPPOHardLossConfig | DPOLossConfig,
    Field(discriminator="type"),
    BeforeValidator(by_type_name("sppo")),
]

__all__ = [
    "DPOLossConfig",
    "LossConfig",
    "LossSettings",
    "SPPOHardLossConfig",
    "SPPOLossConfig",
    "SPPOSingleLossConfig",
]
