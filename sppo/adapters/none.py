"""No adapter: every weight of the policy is trained (full fine-tuning), the default."""

from __future__ import annotations

from typing import Literal

from sppo.adapters.base import AdapterSettings


class NoAdapterConfig(AdapterSettings):
    type: Literal["none"] = "none"

    def peft_config(self):
        return None
