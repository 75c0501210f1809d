"""Prefect tasks: one per SPPO stage, each a thin shell over sppo.stages."""

import logging

# The library logs under `sppo` (a reused stage, a launched training job's output line by line). Prefect
# sends the loggers named in PREFECT_LOGGING_EXTRA_LOGGERS to the run's log in the UI, but only if it was set
# before Prefect configured logging, which in a worker's flow-run process happens before this package loads.
# So attach Prefect's handlers here as that setting would (idempotent), and let INFO through.
_library = logging.getLogger("sppo")
for _handler in logging.getLogger("prefect.extra").handlers:
    if _handler not in _library.handlers:
        _library.addHandler(_handler)
if _library.level == logging.NOTSET:
    _library.setLevel(logging.INFO)
