"""What every generation engine's config provides: the engine it builds and the devices it needs."""

from __future__ import annotations

from sppo.generation import EngineRequest, Generator
from sppo.runner import EngineShape
from sppo.settings import Settings


class GeneratorSettings(Settings):
    """Base of the members' configs; `type` (a Literal in each member) picks the member in a recipe."""

    def build(self, request: EngineRequest) -> Generator:
        """An engine serving the policy in `request.model_dir`, honouring every field of the request."""
        raise NotImplementedError

    def engine_shape(self, cpus: float, gpus: float) -> EngineShape:
        """Devices one engine takes, given the recipe's per-worker CPUs and GPUs for one-device engines."""
        return EngineShape(cpus=cpus, gpus=gpus)
