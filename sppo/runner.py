"""Where a stage's work units run: the library only says what one unit is and how a worker is built.

A stage hands a runner `make_worker` (a picklable, argument-free factory: it loads the model or the
judge once) and its work units; the worker maps a list of units to one result per unit, in order. The
runner returns one result per unit in the order given, wherever it ran them: `run_in_process` (the
default) builds one worker here; distributed.ray_pool.RayRunner builds one per Ray actor and shards
the units across them. Results depend only on the units, never on how they were spread.

`progress(done, total)`, when given, is called in the caller's thread once before the first unit and as
units finish (the Prefect
tasks turn it into a progress artifact; the library never needs to know)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A worker may also have close(): runners call it when the work is done, so its engine's memory is free
# for the next stage in the same process (a Ray actor's goes with the actor).
Worker = Callable[[list[Any]], list[Any]]
Progress = Callable[[int, int], None]  # (units or steps done, total)

# Set by a runner that starts a worker inside a reserved group of devices (a Ray placement group): an
# engine spanning several devices (vLLM with tensor parallelism) then puts its shards there.
PLACEMENT_ENV = "SPPO_ENGINE_PLACEMENT"


@dataclass(frozen=True)
class EngineShape:
    """What one engine (one worker) holds: CPUs and GPUs for a one-device engine, or `tensor_parallel` GPUs
    that must sit on one node (a tensor-parallel engine's shards talk at every layer). Plugins declare it;
    runners reserve it."""

    cpus: float = 1.0
    gpus: float = 0.0
    tensor_parallel: int = 1


class Runner(Protocol):
    def __call__(
        self, make_worker: Callable[[], Worker], units: Sequence[Any], progress: Progress | None = None
    ) -> list[Any]:
        """One result per unit, in the order of `units`."""
        ...


def run_in_process(
    make_worker: Callable[[], Worker], units: Sequence[Any], progress: Progress | None = None
) -> list[Any]:
    worker = make_worker()
    try:
        if progress is None:
            results = worker(list(units))
        else:  # one unit per call: a unit's result never depends on what else the call held
            progress(0, len(units))
            results = []
            for done, unit in enumerate(units, 1):
                results.extend(worker([unit]))
                progress(done, len(units))
    finally:
        close(worker)
    if len(results) != len(units):
        raise RuntimeError(f"worker returned {len(results)} results for {len(units)} work units")
    return results


def close(thing: Any) -> None:
    """thing.close() where it has one (an engine, a worker holding one, a judge)."""
    closer = getattr(thing, "close", None)
    if callable(closer):
        closer()
