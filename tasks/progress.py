"""A stage's progress (the library's `progress(done, total)` callback) as a Prefect progress artifact."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact


class ProgressArtifact:
    """Created on the first call, then updated at most every `every_s` seconds (each update is an API
    call) and always at 100%. Called only from the task's own thread, where Prefect's run context is."""

    def __init__(self, description: str, every_s: float = 2.0):
        self.description = description
        self.every_s = every_s
        self.artifact_id: UUID | None = None
        self.shown = -1.0
        self.at = 0.0

    def __call__(self, done: int, total: int) -> None:
        percent = round(100.0 * done / total, 1) if total else 100.0
        now = time.monotonic()
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(percent, description=self.description)
        elif percent != self.shown and (percent >= 100.0 or now - self.at >= self.every_s):
            update_progress_artifact(self.artifact_id, percent)
        else:
            return
        self.shown, self.at = percent, now
