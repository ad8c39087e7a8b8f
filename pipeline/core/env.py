"""Quiet, offline defaults for every entry point (CLI, flows, benchmarks, tests)."""

from __future__ import annotations

import os

QUIET_OFFLINE = {
    "HF_HUB_OFFLINE": "1",  # a missing hub model fails in seconds instead of retrying for a minute
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "ORT_DISABLE_TELEMETRY": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # the 20 s default timed out on 2 cores
    "PREFECT_LOGGING_EXTRA_LOGGERS": "graft",  # progress heartbeats (pipeline.core.progress) in the run log
}


def set_quiet_offline_defaults() -> None:
    """Set each variable the user has not set."""
    for key, value in QUIET_OFFLINE.items():
        os.environ.setdefault(key, value)
