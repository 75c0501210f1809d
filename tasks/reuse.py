"""Whether a stage was reused (finished by an earlier run) or produced by this one.

For now read from the manifest's `created` time; sppo.store.commit_stage is to say it itself, and then
this is the one place to switch over."""

from __future__ import annotations

import calendar
import time

from sppo.store import Manifest


def stage_reused(manifest: Manifest, since: float) -> bool:
    """True when `manifest`'s stage was finished before `since` (a time.time() taken when this run or
    task started). Manifests record their time to the second, so `since` is rounded down to it."""
    try:
        created = calendar.timegm(time.strptime(manifest.created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:  # no time recorded: older than anything this run made
        return True
    return created < int(since)
