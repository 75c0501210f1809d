"""A failed stage in one line: which stage, the cause, and what to do. The stage task logs it as the run's
first ERROR entry and raises it as a StageMistake or StageCrash, so the task's and the flow run's state
messages say the same; the exception it wraps (its traceback) follows in Prefect's own error entry."""

from __future__ import annotations

from sppo.timeouts import StageTimeout

MISTAKE_HINT = "not retried: fix what it names and run the iteration again (finished stages are reused)"
CRASH_HINT = (
    "retried twice by Prefect; if it persists, see the traceback below, then retry the flow run "
    "(finished stages are reused)"
)


class StageMistake(ValueError):
    """Retrying cannot help: the recipe, the data or the store is wrong (a ValueError underneath), or the stage
    ran past its deadline (StageTimeout)."""


class StageCrash(RuntimeError):
    """Anything else: it may pass on a second try. `__cause__` is what the stage raised."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else "(no message)"


def failure_line(stage: str, err: BaseException) -> str:
    if isinstance(err, StageTimeout):  # its message says what to do
        return f"{stage} failed: {_first_line(err)}"
    if isinstance(err, ValueError):
        return f"{stage} failed: {_first_line(err)} ({MISTAKE_HINT})"
    return f"{stage} crashed: {type(err).__name__}: {_first_line(err)} ({CRASH_HINT})"


def as_stage_failure(stage: str, err: Exception) -> StageMistake | StageCrash:
    kind = StageMistake if isinstance(err, ValueError | StageTimeout) else StageCrash
    return kind(failure_line(stage, err))
