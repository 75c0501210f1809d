"""Which folders an iteration reads and writes, checked before any work starts."""

from __future__ import annotations

from pathlib import Path

from sppo.store import Manifest, RunLayout


class IterationError(ValueError):
    pass


def starting_policy(layout: RunLayout, iteration: int) -> Path:
    """pi_{t-1}, the model iteration t starts from and keeps frozen as its reference."""
    if iteration < 1:
        raise IterationError(f"iterations are numbered from 1, got {iteration}")
    folder = layout.model_dir(iteration - 1)
    if Manifest.read(folder) is None:
        if iteration == 1:
            raise IterationError(f"{folder} holds no base model; the iteration-1 flow prepares it first")
        raise IterationError(
            f"iteration {iteration} starts from iteration {iteration - 1}'s trained model, but {folder} has none "
            f"(no manifest.json) for run {layout.run!r}: run `make run-iteration ITER={iteration - 1} "
            f"RUN={layout.run}` first"
        )
    return folder
