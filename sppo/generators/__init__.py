"""Generation engines, one module per member, each with its own config; a recipe picks one by `type`.

Adding an engine: a module with `XGeneratorConfig(GeneratorSettings)` (a `type` Literal, its fields, `build`
and, if it spans devices, `engine_shape`) and one entry in GeneratorConfig below."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from sppo.generators.hf import HFGeneratorConfig
from sppo.generators.vllm import VLLMGeneratorConfig
from sppo.settings import by_type_name

GeneratorConfig = Annotated[
    HFGeneratorConfig | VLLMGeneratorConfig,
    Field(discriminator="type"),
    BeforeValidator(by_type_name("hf")),
]

__all__ = ["GeneratorConfig", "HFGeneratorConfig", "VLLMGeneratorConfig"]
