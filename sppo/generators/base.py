"""What every generation engine's config provides: the engine it builds and the devices it needs."""

from __future__ import annotations

from pathlib import Path

from sppo.generation import Generator
from sppo.runner import EngineShape
from sppo.settings import Settings


class GeneratorSettings(Settings):
    """Base of the members' configs; `type` (a Literal in each member) picks the member in a recipe."""

    def build(
        self,
        model_dir: str | Path,
        batch_size: int,
        max_prompt_tokens: int,
        max_new_tokens: int,
        trust_remote_code: bool = False,
        threads: int | None = None,
    ) -> Generator:
        """An engine serving the policy in `model_dir` (max_new_tokens sizes a context where an engine needs it)."""
        raise NotImplementedError

    def engine_shape(self, cpus: float, gpus: float) -> EngineShape:
        """Devices one engine takes, given the recipe's per-worker CPUs and GPUs for one-device engines."""
        return EngineShape(cpus=cpus, gpus=gpus)
