"""Prefect flows. Embedded defaults are set before Prefect is imported: no telemetry (there is no
network on these machines) and Prefect's local database inside the project, not in ~/.prefect."""

import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Library loggers show up in flow-run logs (and the UI) beside Prefect's own.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sppo")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# The temporary API starts in 6-13 s on an idle 2-core machine; under a training job beside it, Prefect's
# default 20 s wait was seen to run out.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
DEFAULT_PREFECT_HOME = Path(__file__).resolve().parent.parent / ".cache" / "prefect"
os.environ.setdefault("PREFECT_HOME", str(DEFAULT_PREFECT_HOME))
# Prefect creates its home but not the folders above it. Ours holds the database (every run's parameters,
# logs and artifact links): the owner's only.
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
if Path(os.environ["PREFECT_HOME"]) == DEFAULT_PREFECT_HOME:
    DEFAULT_PREFECT_HOME.chmod(0o700)
