"""What the flows share: the retry policy, Prefect artifacts, and the workspace a worker serves."""

from __future__ import annotations

import os
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline.core.errors import GraftError
from pipeline.release.registry import RegistryBusy

# Transient: the machine, the network, a busy registry or DVC lock. Everything graft reports
# about the data, the params or the model (GraftError) fails the same way on a retry, so it is
# not retried; a rejected gate is not an error at all.
TRANSIENT = (OSError, TimeoutError, ConnectionError, MemoryError, RegistryBusy)
RETRY = {"retries": 2, "retry_delay_seconds": [5, 30]}


def transient_only(_task: Any, _run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only transient failures."""
    try:
        state.result()
    except RegistryBusy:
        return True
    except GraftError:
        return False
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False


def artifact_key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def markdown(key: str, text: str, description: str) -> None:
    create_markdown_artifact(text, key=artifact_key(key), description=description)


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    if rows:
        create_table_artifact(rows, key=artifact_key(key), description=description)


WORKSPACE_ENV = "GRAFT_WORKSPACE"


def enter_workspace() -> None:
    """A flow run started by `graft worker --pool` runs in a temporary folder; the worker names
    its workspace (where params.yaml and the paths in it are) in GRAFT_WORKSPACE."""
    folder = os.environ.get(WORKSPACE_ENV)
    if folder:
        os.chdir(folder)
