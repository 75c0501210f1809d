"""The base of every recipe section and plugin config, and the fingerprint that follows from them.

A field marked `Field(..., json_schema_extra=NOT_OUTPUT)` says where or how fast work runs, never what it
produces (a KV-cache size, a worker backend): fingerprints leave it out, so changing it reuses finished
stages. A stage's fingerprint is the hash of the config objects it uses."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

NOT_OUTPUT = {"output": False}


class Settings(BaseModel):
    """Frozen, strict (unknown keys are errors, so a typo never falls back to a default), no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def output_fields(value: Any) -> Any:
    """`value` as JSON-able data, without the fields marked NOT_OUTPUT (at any depth)."""
    if isinstance(value, BaseModel):
        return {
            name: output_fields(getattr(value, name))
            for name, info in type(value).model_fields.items()
            if (info.json_schema_extra or {}).get("output", True)
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return output_fields(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): output_fields(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [output_fields(v) for v in value]
    return value


def fingerprint(*parts: Any) -> str:
    """A short hash of everything `parts` say that can change a stage's output."""
    return hashlib.sha256(json.dumps([output_fields(p) for p in parts], sort_keys=True).encode()).hexdigest()[:16]


def by_type_name(default: str) -> Callable[[Any], Any]:
    """A plugin field's before-validator: a recipe may name the plugin by its type alone (`engine: vllm`), and
    a mapping without `type` (`judge: {scale: 2}`, or `--set judge.scale=2` on the defaults) means `default`."""

    def normalize(value: Any) -> Any:
        if isinstance(value, str):
            return {"type": value}
        if isinstance(value, dict) and "type" not in value:
            return {"type": default, **value}
        return value

    return normalize
